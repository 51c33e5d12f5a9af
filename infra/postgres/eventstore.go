package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/events"
	"taki/infra/logging"
)

// EventStore appends to and loads from the `events` table. An append is one PostgreSQL transaction that
// inserts the events through watermill-sql's publisher (the log row is the outbox: an event exists if
// and only if it was published), its uniqueness claims, an optional snapshot, and reads back the
// position for the consistency token.
type EventStore struct {
	pool      *pgxpool.Pool
	registry  *events.Registry
	notifier  *Notifier
	schema    eventLogSchema
	logger    watermill.LoggerAdapter
	now       func() time.Time
	committer *groupCommitter
}

// NewEventStore returns an event store on pool. notifier (which wakes consumers after appends) and now
// (time.Now) may be nil.
func NewEventStore(pool *pgxpool.Pool, registry *events.Registry, notifier *Notifier, logger *slog.Logger, now func() time.Time) (*EventStore, error) {
	if pool == nil {
		return nil, errors.New("new event store: pool is nil")
	}
	if registry == nil {
		return nil, errors.New("new event store: registry is nil")
	}
	if logger == nil {
		logger = logging.Discard()
	}
	if now == nil {
		now = time.Now
	}
	return &EventStore{
		pool:      pool,
		registry:  registry,
		notifier:  notifier,
		schema:    eventLogSchema{batchSize: 1},
		logger:    watermillLogger(logger),
		now:       now,
		committer: newGroupCommitter(pool),
	}, nil
}

// Close stops the group committer; appends after it fail.
func (s *EventStore) Close() { s.committer.close() }

// batchExecutor hands watermill's publisher a ContextExecutor that queues its INSERT into the append's
// pipeline. The pipeline runs as one implicit transaction (a single Sync), so the claims, the events,
// the snapshot and the position read commit or fail together, in one round trip instead of four.
type batchExecutor struct{ batch *pgx.Batch }

type queuedResult struct{}

func (queuedResult) RowsAffected() (int64, error) { return 0, nil }

func (e batchExecutor) ExecContext(_ context.Context, query string, args ...any) (wmsql.Result, error) {
	e.batch.Queue(query, args...)
	return queuedResult{}, nil
}

func (e batchExecutor) QueryContext(context.Context, string, ...any) (wmsql.Rows, error) {
	return nil, errors.New("event log publisher does not query")
}

// Append implements events.Log. The statements are prepared here, in the caller's goroutine, and
// committed by the group committer together with those of concurrent commands.
func (s *EventStore) Append(ctx context.Context, appends ...events.Append) (events.Position, error) {
	batch := &pgx.Batch{}
	pub, err := wmsql.NewPublisher(batchExecutor{batch}, wmsql.PublisherConfig{SchemaAdapter: s.schema}, s.logger)
	if err != nil {
		return events.Position{}, fmt.Errorf("append: %w", err)
	}
	now := s.now().UTC()
	nEvents := 0
	for _, a := range appends {
		for _, c := range a.Claims {
			batch.Queue(`INSERT INTO unique_claims (kind, value, stream_id) VALUES ($1, $2, $3)`, c.Kind, c.Value, a.StreamID)
		}
		msgs, err := s.messages(ctx, a, now)
		if err != nil {
			return events.Position{}, err
		}
		if len(msgs) > 0 {
			if err := pub.Publish(Topic, msgs...); err != nil {
				return events.Position{}, fmt.Errorf("append to %s: %w", a.StreamID, err)
			}
		}
		nEvents += len(msgs)
		if a.Snapshot != nil {
			// Queued after the events: currval is the offset of this stream's last event.
			batch.Queue(`INSERT INTO snapshots (stream_id, stream_type, version, schema_version, state, position_tx, position_offset)
				VALUES ($1, $2, $3, $4, $5, pg_current_xact_id(), currval('events_offset_seq'))
				ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, schema_version = excluded.schema_version,
					state = excluded.state, position_tx = excluded.position_tx, position_offset = excluded.position_offset, taken_at = now()
				WHERE snapshots.version < excluded.version`,
				a.StreamID, a.StreamType, a.Snapshot.Version, a.Snapshot.SchemaVersion, string(a.Snapshot.State))
		}
	}
	if nEvents == 0 {
		return events.Position{}, errors.New("append: no events")
	}
	pos, err := s.committer.commit(ctx, batch.QueuedQueries)
	if err != nil {
		return events.Position{}, s.appendError(appends, err)
	}
	if s.notifier != nil {
		s.notifier.Appended()
	}
	return pos, nil
}

func (s *EventStore) appendError(appends []events.Append, err error) error {
	switch {
	case IsUniqueViolation(err, "events_stream_version"):
		return fmt.Errorf("append: %w", events.ErrConflict)
	case IsUniqueViolation(err, "unique_claims_pkey"):
		for _, a := range appends {
			if len(a.Claims) > 0 {
				return &events.ClaimTakenError{Kind: a.Claims[0].Kind, Value: a.Claims[0].Value}
			}
		}
	}
	return fmt.Errorf("append: %w", err)
}

func (s *EventStore) messages(ctx context.Context, a events.Append, now time.Time) ([]*message.Message, error) {
	msgs := make([]*message.Message, 0, len(a.Events))
	for i, ev := range a.Events {
		name := ev.EventType()
		sv := s.registry.Version(name)
		if sv == 0 {
			return nil, fmt.Errorf("append to %s: unregistered event type %s", a.StreamID, name)
		}
		payload, err := marshalEvent(ev)
		if err != nil {
			return nil, fmt.Errorf("append to %s: encode %s: %w", a.StreamID, name, err)
		}
		id, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("append to %s: event id: %w", a.StreamID, err)
		}
		msg := message.NewMessage(id.String(), payload)
		msg.Metadata = message.Metadata{
			MetaEventType:     name,
			MetaSchemaVersion: strconv.Itoa(sv),
			MetaStreamID:      a.StreamID.String(),
			MetaStreamType:    a.StreamType,
			MetaVersion:       strconv.FormatInt(a.ExpectedVersion+int64(i)+1, 10),
			MetaOccurredAt:    now.Format(time.RFC3339Nano),
			MetaCorrelationID: logging.CorrelationID(ctx),
			MetaCausationID:   logging.CausationID(ctx),
			MetaUserID:        logging.UserID(ctx),
		}
		msg.SetContext(ctx)
		msgs = append(msgs, msg)
	}
	return msgs, nil
}

// Load implements events.Log: the latest state is the state at the greatest version.
func (s *EventStore) Load(ctx context.Context, streamID uuid.UUID, snapshotVersion int) (events.Stream, error) {
	return s.LoadUntil(ctx, streamID, snapshotVersion, math.MaxInt64)
}

// LoadUntil reads streamID as it was at maxVersion: its snapshot when that has schema version
// snapshotVersion and a version of at most maxVersion, and the events after it up to maxVersion. A
// snapshot taken later than maxVersion cannot give an older state, so the stream is then read from
// its start. The two reads are pipelined; a snapshot taken between them is noticed as in Load.
func (s *EventStore) LoadUntil(ctx context.Context, streamID uuid.UUID, snapshotVersion int, maxVersion int64) (events.Stream, error) {
	var out events.Stream
	if maxVersion < 1 {
		return out, nil
	}
	batch := &pgx.Batch{}
	batch.Queue(`SELECT version, schema_version, state, position_tx::text, position_offset FROM snapshots
		WHERE stream_id = $1 AND schema_version = $2 AND version <= $3`, streamID, snapshotVersion, maxVersion)
	batch.Queue(`SELECT `+selectColumns+` FROM events WHERE stream_id = $1
		AND version > COALESCE((SELECT version FROM snapshots WHERE stream_id = $1 AND schema_version = $2 AND version <= $3), 0)
		AND version <= $3
		ORDER BY version`, streamID, snapshotVersion, maxVersion)
	br := s.pool.SendBatch(ctx, batch)
	defer br.Close()

	var snap events.Snapshot
	var snapTx string
	err := br.QueryRow().Scan(&snap.Version, &snap.SchemaVersion, &snap.State, &snapTx, &snap.Position.Offset)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return out, fmt.Errorf("load snapshot of %s: %w", streamID, err)
	default:
		if snap.Position.TxID, err = strconv.ParseUint(snapTx, 10, 64); err != nil {
			return out, fmt.Errorf("load snapshot of %s: position: %w", streamID, err)
		}
		out.Snapshot = &snap
	}
	rows, err := br.Query()
	if err != nil {
		return out, fmt.Errorf("load %s: %w", streamID, err)
	}
	if out.Events, err = s.collect(rows); err != nil {
		return out, fmt.Errorf("load %s: %w", streamID, err)
	}
	from := int64(0)
	if out.Snapshot != nil {
		from = out.Snapshot.Version
	}
	// The snapshot the second read went by may differ from the first read's: one taken in between
	// (at most maxVersion) starts the events later, one replacing it (past maxVersion) earlier.
	for len(out.Events) > 0 && out.Events[0].Version <= from {
		out.Events = out.Events[1:]
	}
	// Events that do not follow the snapshot held mean the second read went by a newer snapshot.
	// So may no events at all, short of maxVersion; for the latest state (Load) that case is left to
	// the append's version check, which a state read so fails with a conflict, rather than paid for
	// with a second read on every load of a new stream.
	gap := len(out.Events) > 0 && out.Events[0].Version != from+1
	if len(out.Events) == 0 && from < maxVersion && maxVersion != math.MaxInt64 {
		gap = true
	}
	if gap {
		rows, err := s.pool.Query(ctx, `SELECT `+selectColumns+` FROM events WHERE stream_id = $1 AND version > $2 AND version <= $3
			ORDER BY version`, streamID, from, maxVersion)
		if err != nil {
			return out, fmt.Errorf("reload %s: %w", streamID, err)
		}
		if out.Events, err = s.collect(rows); err != nil {
			return out, fmt.Errorf("reload %s: %w", streamID, err)
		}
	}
	return out, nil
}

// collect decodes rows. At an event this binary cannot read it stops with the events before it and
// an *events.UnreadableError.
func (s *EventStore) collect(rows pgx.Rows) ([]events.Envelope, error) {
	defer rows.Close()
	var out []events.Envelope
	for rows.Next() {
		env, err := s.decodeRow(rows)
		if errors.Is(err, events.ErrUndecodable) {
			return out, &events.UnreadableError{Event: env, Err: err}
		}
		if err != nil {
			return nil, err
		}
		out = append(out, env)
	}
	return out, rows.Err()
}

func (s *EventStore) decodeRow(row wmsql.Scanner) (events.Envelope, error) {
	return decodeRow(s.registry, row)
}

func decodeRow(registry *events.Registry, row wmsql.Scanner) (events.Envelope, error) {
	var r rowScan
	if err := r.scan(row); err != nil {
		return events.Envelope{}, fmt.Errorf("scan event: %w", err)
	}
	return r.envelope(registry)
}

// ClaimOwner returns the stream that claimed value of kind (the user of an email address). Claims are
// written with their stream's first events, so an owner always has a stream.
func (s *EventStore) ClaimOwner(ctx context.Context, kind, value string) (uuid.UUID, bool, error) {
	var id uuid.UUID
	err := s.pool.QueryRow(ctx, `SELECT stream_id FROM unique_claims WHERE kind = $1 AND value = $2`, kind, value).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil, false, nil
	}
	if err != nil {
		return uuid.Nil, false, fmt.Errorf("look up %s claim: %w", kind, err)
	}
	return id, true, nil
}

// ExistingStreams returns which of ids have a stream of streamType, in one query however many ids
// there are. Every stream starts at version 1, so it probes the (stream_id, version) unique index once
// per id instead of reading whole streams.
func (s *EventStore) ExistingStreams(ctx context.Context, streamType string, ids []uuid.UUID) (map[uuid.UUID]bool, error) {
	found := make(map[uuid.UUID]bool, len(ids))
	if len(ids) == 0 {
		return found, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT stream_id FROM events
		WHERE stream_id = ANY($1) AND version = 1 AND stream_type = $2`, ids, streamType)
	if err != nil {
		return nil, fmt.Errorf("look up %d %s streams: %w", len(ids), streamType, err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fmt.Errorf("look up %d %s streams: %w", len(ids), streamType, err)
	}
	for _, id := range got {
		found[id] = true
	}
	return found, nil
}

// ReadLog reads up to limit events after position in consumption order, only of eventType when it is
// not empty. At an event this binary cannot read it stops with an *events.UnreadableError, returning the
// events before it too. Like the consumers, it shows no event while an older writer is still running, so a reader
// that pages with the last position it saw never skips one.
func (s *EventStore) ReadLog(ctx context.Context, after events.Position, eventType string, limit int) ([]events.Envelope, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+selectColumns+` FROM events
		WHERE (transaction_id, "offset") > ($1::text::xid8, $2)
		  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
		  AND ($3 = '' OR event_type = $3)
		ORDER BY transaction_id, "offset" LIMIT $4`,
		strconv.FormatUint(after.TxID, 10), after.Offset, eventType, limit)
	if err != nil {
		return nil, fmt.Errorf("read log: %w", err)
	}
	out, err := s.collect(rows)
	if err != nil {
		// The events before an unreadable one come along (events.UnreadableError).
		return out, fmt.Errorf("read log: %w", err)
	}
	return out, nil
}
