package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/events"
)

// BulkApplier is a Projection that applies a run of events with fewer statements than one per event.
// The catch-up path (replay, verify) uses it: applying a long log one statement per event is bounded by
// PostgreSQL's per-statement cost, and updating the same row thousands of times in one transaction
// leaves a chain of row versions each later update must walk.
type BulkApplier interface {
	// ApplyAll queues on b the writes for evs, in log order, with the same result as Apply of each.
	ApplyAll(b *pgx.Batch, evs []events.Envelope) error
}

// applyAll queues proj's writes for evs, in bulk when proj can.
func applyAll(b *pgx.Batch, proj Projection, evs []events.Envelope) error {
	if bulk, ok := proj.(BulkApplier); ok {
		if err := bulk.ApplyAll(b, evs); err != nil {
			return fmt.Errorf("apply %d events from %s: %w", len(evs), evs[0].Position, err)
		}
		return nil
	}
	for _, env := range evs {
		if err := proj.Apply(b, env); err != nil {
			return fmt.Errorf("apply %s %s (position %s): %w", env.Type, env.ID, env.Position, err)
		}
	}
	return nil
}

// CatchUpOptions tunes CatchUp.
type CatchUpOptions struct {
	// BatchSize is the number of events read, applied and committed per transaction (default 10,000).
	// Larger batches replay faster (on a 1M-event messenger log here: 61k events/s at 5,000, 70k at
	// 20,000) but hold the groups' locks, and back every log reader of the cluster, for longer.
	BatchSize int
	// Until is where CatchUp stops: once every projection has applied the log up to it. Zero means the
	// log's head when CatchUp starts.
	Until events.Position
	// Progress, when set, is called after each committed batch with the lowest checkpoint reached and
	// the number of events read so far.
	Progress func(reached events.Position, read int64)
	// Stalled, when set, is called every StallEvery (default 5 s) while the catch-up has nothing to
	// apply short of Until: committed events stay invisible while an older transaction of the cluster
	// runs (OldestWriter names it).
	Stalled    func(waited time.Duration)
	StallEvery time.Duration
}

func (o *CatchUpOptions) setDefaults() {
	if o.BatchSize <= 0 {
		o.BatchSize = 10_000
	}
	if o.StallEvery <= 0 {
		o.StallEvery = 5 * time.Second
	}
}

// CatchUp brings projections up to a position of the log by the batched path: each transaction locks
// the consumer groups' offsets rows (the lock every watermill-sql batch of those groups takes, so a
// running server's subscribers wait or retry and nothing is applied twice), applies to each projection
// the events past its own checkpoint in one pipeline, moves the offsets and commits. The log is read
// once for all of them, ahead of the writes on a connection of its own, with the subscribers'
// visibility rule, so an event committed late is never skipped. It returns the number of events it
// applied batches of.
func CatchUp(ctx context.Context, pool *pgxpool.Pool, registry *events.Registry, projs []Projection, opts CatchUpOptions) (int64, error) {
	opts.setDefaults()
	if pool == nil || registry == nil || len(projs) == 0 {
		return 0, errors.New("catch up: pool, registry and projections are required")
	}
	byName := make(map[string]Projection, len(projs))
	for _, p := range projs {
		byName[p.Name()] = p
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	// One lock order for every caller, so two catch-ups of overlapping groups cannot deadlock.
	slices.Sort(names)
	until := opts.Until
	if until.IsZero() {
		head, err := logHead(ctx, pool)
		if err != nil {
			return 0, err
		}
		until = head
	}
	keep := newUpkeep(projs, opts.BatchSize)
	if err := keep.skipRows(ctx, pool); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		total  int64
		reader *logReader
	)
	defer func() {
		if reader != nil {
			reader.stop()
		}
		// On the way out after an error, which says more than the upkeep's.
		cancel()
		_ = keep.wait()
	}()
	for {
		var batch readBatch
		if reader != nil {
			waiting := time.Now()
			stall := time.NewTicker(opts.StallEvery)
			for got := false; !got; {
				select {
				case batch = <-reader.batches:
					got = true
				case <-ctx.Done():
					stall.Stop()
					return total, ctx.Err()
				case <-stall.C:
					if opts.Stalled != nil {
						opts.Stalled(time.Since(waiting))
					}
				}
			}
			stall.Stop()
			if batch.err != nil {
				return total, batch.err
			}
		}
		reached, applied, err := catchUpBatch(ctx, pool, byName, names, batch)
		if err != nil {
			return total, err
		}
		total += applied
		if opts.Progress != nil && applied > 0 {
			opts.Progress(reached, total)
		}
		if err := keep.afterInBackground(ctx, pool, total); err != nil {
			return total, err
		}
		if !reached.Less(until) {
			return total, keep.wait()
		}
		if reader == nil || reached.Less(batch.after) {
			// First round, or the groups were rewound under us (a replay started elsewhere): read from
			// where they are.
			if reader != nil {
				reader.stop()
			}
			reader = startLogReader(ctx, pool, registry, reached, opts.BatchSize)
		}
	}
}

// upkeep vacuums and analyzes the tables of read models being rebuilt, each time the events applied to
// them have doubled. A table emptied by a reset has no statistics, so the planner takes it for tiny
// and scans it whole for every statement, and with no autovacuum (or not soon enough) its updated rows
// leave dead versions behind: a replay of a realistic log ran at a fifth of its speed without it.
// Doubling keeps the total work within about twice the final tables' size.
type upkeep struct {
	tables  []string
	next    int64
	running chan error // the background upkeep's outcome, while one runs
}

func newUpkeep(projs []Projection, first int) *upkeep {
	u := &upkeep{next: int64(first)}
	for _, p := range projs {
		for _, t := range p.Tables() {
			u.tables = append(u.tables, pgx.Identifier{t}.Sanitize())
		}
	}
	return u
}

// skipRows moves the first threshold up to the rows the tables already hold (PostgreSQL's estimate):
// the upkeep is for tables a reset emptied, or new ones, which have no statistics; a catch-up onto a
// populated read model (a server started behind) leaves it to autovacuum rather than vacuuming
// every large table after the first few thousand events.
func (u *upkeep) skipRows(ctx context.Context, pool *pgxpool.Pool) error {
	if len(u.tables) == 0 {
		return nil
	}
	var rows int64
	if err := pool.QueryRow(ctx, `SELECT COALESCE(sum(GREATEST(c.reltuples, 0)), 0)::bigint FROM pg_class c
		WHERE c.oid IN (SELECT to_regclass(t) FROM unnest($1::text[]) AS t)`, u.tables).Scan(&rows); err != nil {
		return fmt.Errorf("size of %s: %w", strings.Join(u.tables, ", "), err)
	}
	u.next = max(u.next, rows)
	return nil
}

// after runs the upkeep on q (outside any transaction) once applied reaches the next threshold.
func (u *upkeep) after(ctx context.Context, q interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, applied int64) error {
	if applied < u.next || len(u.tables) == 0 {
		return nil
	}
	u.next = 2 * applied
	return u.run(ctx, q)
}

func (u *upkeep) run(ctx context.Context, q interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}) error {
	if _, err := q.Exec(ctx, `VACUUM (ANALYZE) `+strings.Join(u.tables, ", ")); err != nil {
		return fmt.Errorf("vacuum %s: %w", strings.Join(u.tables, ", "), err)
	}
	return nil
}

// afterInBackground is after on a connection of pool's own while the caller goes on applying (a
// vacuum takes no lock that writes wait for): it waits only for the previous upkeep, should that one
// still run. wait returns the last one's outcome.
func (u *upkeep) afterInBackground(ctx context.Context, pool *pgxpool.Pool, applied int64) error {
	if applied < u.next || len(u.tables) == 0 {
		return nil
	}
	if err := u.wait(); err != nil {
		return err
	}
	u.next = 2 * applied
	u.running = make(chan error, 1)
	go func(done chan<- error) { done <- u.run(ctx, pool) }(u.running)
	return nil
}

// wait waits for the background upkeep, if one runs, and returns its error.
func (u *upkeep) wait() error {
	if u.running == nil {
		return nil
	}
	err := <-u.running
	u.running = nil
	return err
}

// readBatch is a run of the log read ahead: the events after position after.
type readBatch struct {
	after events.Position
	envs  []events.Envelope
	err   error
}

// logReader reads the log ahead of the writes, a couple of batches at most.
type logReader struct {
	batches chan readBatch
	stop    func()
}

func startLogReader(ctx context.Context, pool *pgxpool.Pool, registry *events.Registry, from events.Position, limit int) *logReader {
	ctx, cancel := context.WithCancel(ctx)
	r := &logReader{batches: make(chan readBatch, 2)}
	done := make(chan struct{})
	r.stop = func() { cancel(); <-done }
	go func() {
		defer close(done)
		after, wait := from, time.Duration(0)
		for {
			envs, err := readLog(ctx, pool, registry, after, limit)
			if err == nil && len(envs) == 0 {
				// Committed but not visible yet: an older transaction of the cluster still runs.
				wait = min(max(2*wait, time.Millisecond), 100*time.Millisecond)
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				continue
			}
			wait = 0
			select {
			case r.batches <- readBatch{after: after, envs: envs, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
			after = envs[len(envs)-1].Position
		}
	}()
	return r
}

// catchUpBatch runs one catch-up transaction: it applies the events of batch each group has not
// applied yet. It returns the lowest checkpoint after it and the number of events it applied to at
// least one group. A batch that starts past a group's checkpoint applies nothing (the caller then reads
// again from the checkpoint).
func catchUpBatch(ctx context.Context, pool *pgxpool.Pool, byName map[string]Projection, names []string, batch readBatch) (events.Position, int64, error) {
	var reached events.Position
	var applied int64
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		checkpoints, err := lockCheckpoints(ctx, tx, names)
		if err != nil {
			return err
		}
		reached = checkpoints[names[0]]
		for _, n := range names[1:] {
			reached = minPosition(reached, checkpoints[n])
		}
		envs := batch.envs
		if len(envs) == 0 || reached.Less(batch.after) {
			return nil
		}
		last := envs[len(envs)-1].Position
		b := &pgx.Batch{}
		next := last
		for _, name := range names {
			cp := checkpoints[name]
			if !cp.Less(last) {
				next = minPosition(next, cp)
				continue
			}
			i := sort.Search(len(envs), func(i int) bool { return cp.Less(envs[i].Position) })
			applied = max(applied, int64(len(envs)-i))
			if err := applyAll(b, byName[name], envs[i:]); err != nil {
				return fmt.Errorf("catch up %s: %w", name, err)
			}
			b.Queue(`UPDATE events_offsets SET offset_acked = $2, last_processed_transaction_id = $3::text::xid8
				WHERE consumer_group = $1`, name, last.Offset, strconv.FormatUint(last.TxID, 10))
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("catch up %v to %s: %w", names, last, err)
		}
		reached = next
		return nil
	})
	return reached, applied, err
}

func minPosition(a, b events.Position) events.Position {
	if b.Less(a) {
		return b
	}
	return a
}

// lockCheckpoints locks the groups' offsets rows, creating missing ones, and reads their checkpoints.
func lockCheckpoints(ctx context.Context, tx pgx.Tx, names []string) (map[string]events.Position, error) {
	if _, err := tx.Exec(ctx, `INSERT INTO events_offsets (consumer_group, offset_acked, last_processed_transaction_id)
		SELECT g, 0, '0' FROM unnest($1::text[]) AS g ON CONFLICT DO NOTHING`, names); err != nil {
		return nil, fmt.Errorf("create offsets of %v: %w", names, err)
	}
	rows, err := tx.Query(ctx, `SELECT consumer_group, last_processed_transaction_id::text, COALESCE(offset_acked, 0)
		FROM events_offsets WHERE consumer_group = ANY($1) ORDER BY consumer_group FOR UPDATE`, names)
	if err != nil {
		return nil, fmt.Errorf("lock offsets of %v: %w", names, err)
	}
	out := make(map[string]events.Position, len(names))
	var name, txText string
	var off int64
	_, err = pgx.ForEachRow(rows, []any{&name, &txText, &off}, func() error {
		t, err := strconv.ParseUint(txText, 10, 64)
		if err != nil {
			return err
		}
		out[name] = events.Position{TxID: t, Offset: off}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lock offsets of %v: %w", names, err)
	}
	return out, nil
}

// readLog reads up to limit events after position, with ReadLog's visibility rule.
func readLog(ctx context.Context, pool *pgxpool.Pool, registry *events.Registry, after events.Position, limit int) ([]events.Envelope, error) {
	rows, err := pool.Query(ctx, `SELECT `+selectColumns+` FROM events
		WHERE (transaction_id, "offset") > ($1::text::xid8, $2)
		  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
		ORDER BY transaction_id, "offset" LIMIT $3`,
		strconv.FormatUint(after.TxID, 10), after.Offset, limit)
	if err != nil {
		return nil, fmt.Errorf("read log after %s: %w", after, err)
	}
	defer rows.Close()
	out := make([]events.Envelope, 0, limit)
	for rows.Next() {
		env, err := decodeRow(registry, rows)
		if err != nil {
			return nil, fmt.Errorf("read log after %s: %w", after, err)
		}
		out = append(out, env)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read log after %s: %w", after, err)
	}
	return out, nil
}

// OldestWriter describes the cluster's oldest running transaction that has a transaction id: while it
// runs, no log reader sees an event committed after it began. Empty when there is none.
func OldestWriter(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	var pid int
	var db, state, query string
	var age time.Duration
	err := pool.QueryRow(ctx, `SELECT pid, COALESCE(datname, ''), COALESCE(state, ''),
			COALESCE(now() - xact_start, '0'), left(COALESCE(query, ''), 100)
		FROM pg_stat_activity WHERE backend_xid IS NOT NULL ORDER BY xact_start LIMIT 1`).Scan(&pid, &db, &state, &age, &query)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the oldest transaction: %w", err)
	}
	return fmt.Sprintf("pid %d in database %q, %s for %s: %s", pid, db, state, age.Round(time.Millisecond), query), nil
}
