package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"taki/events"
)

// TailConfig configures a Tail. Zero values get the defaults.
type TailConfig struct {
	// After is the position Run starts after. Nil starts at the log's visible head when Run starts:
	// a reader that wants only what commits from then on (the WebSocket fan-out).
	After *events.Position
	// EventType delivers only the events of that type (default: all).
	EventType string
	// StopAtHead makes Run deliver every event committed before it started, then return nil, instead
	// of following the log. Events an older running transaction still hides are waited for, so that
	// the last position delivered is safe to resume from.
	StopAtHead bool
	// StopOnError makes Run return the first failed read or delivery instead of retrying it: for a
	// one-shot reader with someone waiting on its answer, not a server that must ride out an outage.
	StopOnError bool
	// BatchSize is how many events one read returns at most (default 1000). A full batch is followed
	// by the next read at once: the tail chases while it is behind.
	BatchSize int
	// PollInterval is the safety-net read while no wake-up arrives (default 1 s). Wake-ups (appends of
	// this process, NOTIFY of the others) are the normal path; the poll only covers a lost one.
	PollInterval time.Duration
	// Hidden, when set, is told once a stall has lasted HiddenAfter (default 2 s): committed events up
	// to upTo stay invisible because an older transaction of the cluster still runs. The tail cannot
	// end that transaction; whoever waits on the tail may want to know why nothing comes.
	Hidden      func(ctx context.Context, upTo events.Position)
	HiddenAfter time.Duration
	// Unreadable is told of each event this binary cannot read (events.ErrUndecodable), in log order
	// with the batches: the tail then reads on past it rather than retrying a read that cannot
	// succeed (required).
	Unreadable func(ctx context.Context, env events.Envelope, err error)
	Logger     *slog.Logger
}

func (c *TailConfig) setDefaults() {
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.HiddenAfter == 0 {
		c.HiddenAfter = 2 * time.Second
	}
}

func (c *TailConfig) validate(registry *events.Registry) error {
	if c.Logger == nil || c.Unreadable == nil {
		return errors.New("logger and Unreadable are required")
	}
	if c.BatchSize < 1 || c.PollInterval < 0 || c.HiddenAfter < 0 {
		return errors.New("batch size, poll interval and hidden-after must be positive")
	}
	if c.EventType != "" && !registry.Known(c.EventType) {
		// A type nobody appends would make a tail that silently delivers nothing.
		return fmt.Errorf("unknown event type %q", c.EventType)
	}
	return nil
}

// Tail reads the event log as it grows and hands every committed event, in log order, to a callback.
// It keeps its position in memory only: each instance runs its own, by default starting at the log's
// visible head when it starts, for its own WebSockets (DESIGN.md, "Real time": instances share
// nothing but PostgreSQL). It reads with ReadLog's visibility rule, so an event committed late by a
// slow writer is delivered when it becomes visible, never skipped.
type Tail struct {
	store    *EventStore
	notifier *Notifier
	cfg      TailConfig

	started   chan struct{}
	startOnce sync.Once

	mu  sync.Mutex
	pos events.Position // the last event delivered, or the start
}

// NewTail returns a tail on store (required), woken by notifier (required unless cfg.StopAtHead: a
// tail that stops at the head never waits for appends).
func NewTail(store *EventStore, notifier *Notifier, cfg TailConfig) (*Tail, error) {
	cfg.setDefaults()
	if store == nil || (notifier == nil && !cfg.StopAtHead) {
		return nil, errors.New("new tail: store and, to follow the log, notifier are required")
	}
	if err := cfg.validate(store.registry); err != nil {
		return nil, fmt.Errorf("new tail: %w", err)
	}
	return &Tail{store: store, notifier: notifier, cfg: cfg, started: make(chan struct{})}, nil
}

// Started is closed once Run has read its start position: every event after it will be delivered,
// and every event up to it was visible to any log read that begins afterwards.
func (t *Tail) Started() <-chan struct{} { return t.started }

// Position returns the position of the last event delivered (the start position before the first).
func (t *Tail) Position() events.Position {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pos
}

func (t *Tail) setPosition(pos events.Position) {
	t.mu.Lock()
	t.pos = pos
	t.mu.Unlock()
}

const (
	tailMinChase = 500 * time.Microsecond
	tailMaxChase = 100 * time.Millisecond
	tailMaxRetry = 5 * time.Second
)

// Run delivers every event committed after the start (TailConfig.After, by default the log's visible
// head at its start) to deliver, in log order and in batches, until ctx ends or, with StopAtHead, the
// log's head at its start was delivered. A batch whose delivery fails is offered again after a pause
// (deliver must tolerate seeing events again) unless StopOnError. An event this binary cannot read
// goes to the configured Unreadable in its place in the order, after the batch before it was
// delivered. It returns nil at the head (StopAtHead), the failure (StopOnError), or ctx's error, or a
// start-up failure once ctx ends.
func (t *Tail) Run(ctx context.Context, deliver func(ctx context.Context, batch []events.Envelope) error) error {
	start, stop, err := t.bounds(ctx)
	if err != nil {
		return err
	}
	t.setPosition(start)
	t.startOnce.Do(func() { close(t.started) })
	t.cfg.Logger.DebugContext(ctx, "log tail started", slog.String("position", start.String()))

	pos := start
	var (
		chase    time.Duration
		failures int
		hidden   stall
	)
	for ctx.Err() == nil {
		var woke <-chan struct{}
		if t.notifier != nil {
			// Taken before the read, so that an append committed after it wakes the wait below.
			_, woke = t.notifier.Generation()
		}
		r, err := t.readOnce(ctx, pos, stop, deliver)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if t.cfg.StopOnError {
				return err
			}
			failures++
			wait := min(time.Duration(failures)*100*time.Millisecond, tailMaxRetry)
			t.cfg.Logger.ErrorContext(ctx, "log tail failed; retrying", slog.String("position", pos.String()),
				slog.String("err", err.Error()), slog.Duration("retry_in", wait))
			if !sleepCtx(ctx, wait) {
				break
			}
			continue
		}
		failures = 0
		if r.last != pos {
			pos = r.last
			t.setPosition(pos)
			hidden = stall{}
		}
		if r.more {
			chase = tailMinChase
			continue // behind: read on at once
		}
		// A short read is not proof of being caught up: a committed event stays invisible while an
		// older transaction of the cluster still runs, and that transaction's end wakes nobody when
		// it appended nothing. While the log holds events the read could not see, poll tightly.
		head := stop
		if !t.cfg.StopAtHead {
			if head, err = t.store.LogHead(ctx); err != nil {
				if ctx.Err() != nil {
					break
				}
				if t.cfg.StopOnError {
					return fmt.Errorf("log tail: %w", err)
				}
				head = r.seen // cannot tell: the wake-up or the poll reads again
			}
		}
		if r.seen.Less(head) {
			t.noteHidden(ctx, &hidden, head)
			if chase == 0 {
				chase = tailMinChase
			}
			if !sleepCtx(ctx, chase) {
				break
			}
			chase = min(chase*2, tailMaxChase)
			continue
		}
		chase, hidden = 0, stall{}
		if t.cfg.StopAtHead {
			return nil
		}
		select {
		case <-woke:
		case <-time.After(t.cfg.PollInterval):
		case <-ctx.Done():
		}
	}
	return ctx.Err()
}

// tailRead is what one readOnce did.
type tailRead struct {
	last events.Position // the last event delivered, or where the read started
	seen events.Position // every event of the log up to it, of any type, was read
	more bool            // more events may be readable at once
}

// readOnce reads the events after pos (up to stop with StopAtHead) and delivers them, the unreadable
// one that may end the read to Unreadable.
func (t *Tail) readOnce(ctx context.Context, pos, stop events.Position, deliver func(context.Context, []events.Envelope) error) (tailRead, error) {
	r := tailRead{last: pos, seen: pos}
	if t.cfg.EventType != "" {
		// The events of one type say nothing of how far the log was read; the visible head, taken
		// before the read, does: every event up to it is visible to the read.
		visible, err := t.store.VisibleHead(ctx)
		if err != nil {
			return r, fmt.Errorf("log tail: %w", err)
		}
		r.seen = later(visible, pos)
	}
	batch, err := t.store.ReadLog(ctx, pos, t.cfg.EventType, t.cfg.BatchSize)
	var unreadable *events.UnreadableError
	if err != nil && !errors.As(err, &unreadable) {
		return r, fmt.Errorf("log tail after %s: %w", pos, err)
	}
	r.more = len(batch) == t.cfg.BatchSize || unreadable != nil
	if t.cfg.StopAtHead {
		// What committed after Run started is not this run's to deliver.
		if n := positionsUpTo(batch, stop); n < len(batch) || (unreadable != nil && stop.Less(unreadable.Event.Position)) {
			batch, unreadable, r.more, r.seen = batch[:n], nil, false, stop
		}
	}
	if len(batch) > 0 {
		if err := deliver(ctx, batch); err != nil {
			return r, fmt.Errorf("log tail: deliver after %s: %w", pos, err)
		}
		r.last = batch[len(batch)-1].Position
	}
	if unreadable != nil {
		t.cfg.Unreadable(ctx, unreadable.Event, unreadable.Err)
		r.last = unreadable.Event.Position
	}
	if r.more {
		r.seen = r.last // the read stopped short of what it could see
	} else {
		r.seen = later(r.seen, r.last)
	}
	if t.cfg.StopAtHead && !r.seen.Less(stop) {
		r.more = false
	}
	return r, nil
}

// later returns the later of two positions.
func later(a, b events.Position) events.Position {
	if a.Less(b) {
		return b
	}
	return a
}

// positionsUpTo counts the events of batch (in log order) at or before stop.
func positionsUpTo(batch []events.Envelope, stop events.Position) int {
	for i, env := range batch {
		if stop.Less(env.Position) {
			return i
		}
	}
	return len(batch)
}

// stall tracks a wait for hidden events, so that TailConfig.Hidden hears of it once.
type stall struct {
	since time.Time
	told  bool
}

func (t *Tail) noteHidden(ctx context.Context, s *stall, upTo events.Position) {
	if t.cfg.Hidden == nil || s.told {
		return
	}
	now := time.Now()
	if s.since.IsZero() {
		s.since = now
	}
	if now.Sub(s.since) >= t.cfg.HiddenAfter {
		s.told = true
		t.cfg.Hidden(ctx, upTo)
	}
}

// bounds reads where Run starts and, with StopAtHead, where it stops: the log's head, hidden events
// included, since they committed before the start too.
func (t *Tail) bounds(ctx context.Context) (start, stop events.Position, err error) {
	if t.cfg.After != nil {
		start = *t.cfg.After
	} else if start, err = t.retry(ctx, "read the visible log head", t.store.VisibleHead); err != nil {
		return start, stop, err
	}
	if t.cfg.StopAtHead {
		stop, err = t.retry(ctx, "read the log head", t.store.LogHead)
	}
	return start, stop, err
}

// retry reads a position, retrying while the database is unreachable (unless StopOnError).
func (t *Tail) retry(ctx context.Context, what string, read func(context.Context) (events.Position, error)) (events.Position, error) {
	failures := 0
	for {
		pos, err := read(ctx)
		if err == nil {
			return pos, nil
		}
		if ctx.Err() != nil || t.cfg.StopOnError {
			return events.Position{}, fmt.Errorf("log tail: %w", err)
		}
		failures++
		wait := min(time.Duration(failures)*100*time.Millisecond, tailMaxRetry)
		t.cfg.Logger.ErrorContext(ctx, "log tail cannot "+what+"; retrying", slog.String("err", err.Error()),
			slog.Duration("retry_in", wait))
		if !sleepCtx(ctx, wait) {
			return events.Position{}, fmt.Errorf("log tail: %w", err)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// VisibleHead returns the position of the last event a log reader may see now (ReadLog's rule: no
// event of a transaction at or after the oldest one still running), zero for an empty log. Every
// event committed later comes after it, so reading on from it skips nothing.
func (s *EventStore) VisibleHead(ctx context.Context) (events.Position, error) {
	return scanPosition(s.pool.QueryRow(ctx, headSQL(`e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())`)), "read the visible log head")
}

// LogHead returns the position of the last committed event, visible to log readers yet or not (zero
// for an empty log). A position past it was not issued by this log.
func (s *EventStore) LogHead(ctx context.Context) (events.Position, error) {
	return logHead(ctx, s.pool)
}

// CountAfter counts the committed events after position, but stops counting at limit: it costs at
// most limit index entries however long the log is.
func (s *EventStore) CountAfter(ctx context.Context, after events.Position, limit int) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM events
		WHERE (transaction_id, "offset") > ($1::text::xid8, $2)
		ORDER BY transaction_id, "offset" LIMIT $3) AS later`,
		strconv.FormatUint(after.TxID, 10), after.Offset, limit).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count events after %s: %w", after, err)
	}
	return n, nil
}

func scanPosition(row pgx.Row, what string) (events.Position, error) {
	var tx string
	var off int64
	err := row.Scan(&tx, &off)
	if errors.Is(err, pgx.ErrNoRows) {
		return events.Position{}, nil
	}
	if err != nil {
		return events.Position{}, fmt.Errorf("%s: %w", what, err)
	}
	t, err := strconv.ParseUint(tx, 10, 64)
	if err != nil {
		return events.Position{}, fmt.Errorf("%s: %w", what, err)
	}
	return events.Position{TxID: t, Offset: off}, nil
}
