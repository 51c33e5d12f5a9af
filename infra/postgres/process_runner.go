package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/events"
)

// ProcessConfig configures a ProcessRunner.
type ProcessConfig struct {
	// Name is the consumer group: the name of its checkpoint row in events_offsets and of its
	// advisory lock.
	Name string
	// Types are the event types handed to Handle; the others only move the checkpoint.
	Types []string
	// Handle drives one event to its end. It runs outside any transaction, concurrently with the
	// handling of other events, and must be safe to repeat: after a restart, events handled after the
	// last checkpoint are handed over again.
	Handle func(ctx context.Context, e events.Envelope) error
	// Lead, when set, runs beside the handling for as long as this instance leads, with the context
	// Handle gets (it ends when leading ends); leading is given up only once Lead has returned. A
	// process manager uses it to resume, from the log, work it keeps outside the handling of events
	// (waits on the provider, say) and to stop that work when another instance takes over.
	Lead func(ctx context.Context)
	// Concurrency bounds the events handled at once; default 16.
	Concurrency int
	// BatchSize is how many events one read of the log takes; default 200.
	BatchSize int
	// PollInterval is how often the log is read when no append is announced; default 1s.
	PollInterval time.Duration
	Logger       *slog.Logger
}

// ProcessRunner feeds the events of the log to a process manager on one instance at a time (the
// holder of the group's advisory lock, as the projections' leader election does), from a checkpoint
// kept in events_offsets. Events are handled concurrently (bounded); the checkpoint only moves past an
// event once it and every event before it were handled, so a restart loses none.
type ProcessRunner struct {
	pool     *pgxpool.Pool
	store    *EventStore
	notifier *Notifier
	cfg      ProcessConfig
	// maxWaiting is maxWaiting, smaller in tests; full, when set by tests, runs each time the
	// runner does not read because that many events wait.
	maxWaiting int
	full       func()
	// readEmpty, when set by tests, runs after each read of the log that returned nothing.
	readEmpty func()
}

// NewProcessRunner checks cfg.
func NewProcessRunner(pool *pgxpool.Pool, store *EventStore, notifier *Notifier, cfg ProcessConfig) (*ProcessRunner, error) {
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 16
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 200
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = time.Second
	}
	if pool == nil || store == nil || notifier == nil || cfg.Logger == nil || cfg.Handle == nil || cfg.Name == "" {
		return nil, errors.New("new process runner: pool, store, notifier, logger, handle and name are required")
	}
	if cfg.Concurrency < 1 || cfg.BatchSize < 1 || cfg.PollInterval < 0 {
		return nil, errors.New("new process runner: concurrency, batch size and poll interval must be positive")
	}
	return &ProcessRunner{pool: pool, store: store, notifier: notifier, cfg: cfg, maxWaiting: maxWaiting}, nil
}

// Run campaigns for the group's lock and, while it holds it, handles events, until ctx ends.
func (r *ProcessRunner) Run(ctx context.Context) {
	key := groupLockKey("process." + r.cfg.Name)
	for {
		conn, ok, err := tryAdvisoryLock(ctx, r.pool, key)
		switch {
		case ctx.Err() != nil:
			if ok {
				releaseAdvisoryLock(conn, key)
			}
			return
		case err != nil:
			r.cfg.Logger.Error("process manager cannot campaign for its lock", slog.String("process", r.cfg.Name), slog.String("err", err.Error()))
		case ok:
			r.cfg.Logger.Info("process manager leads", slog.String("process", r.cfg.Name))
			if err := r.lead(ctx, conn); err != nil && ctx.Err() == nil {
				r.cfg.Logger.Error("process manager stopped leading", slog.String("process", r.cfg.Name), slog.String("err", err.Error()))
			}
			releaseAdvisoryLock(conn, key)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(standbyRetry):
		}
	}
}

// maxWaiting bounds the events a runner holds behind an unfinished one.
const maxWaiting = 4096

type processItem struct {
	pos  events.Position
	done chan struct{}
}

// lead handles events from the checkpoint on while the lock's connection lives.
func (r *ProcessRunner) lead(ctx context.Context, lock *pgxpool.Conn) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wait []processItem // dispatched, in log order
	var leading chan struct{}
	if r.cfg.Lead != nil {
		leading = make(chan struct{})
		go func() {
			defer close(leading)
			r.cfg.Lead(ctx)
		}()
	}
	defer func() {
		cancel()
		for _, it := range wait {
			<-it.done
		}
		if leading != nil {
			<-leading
		}
	}()
	read, err := r.checkpoint(ctx)
	if err != nil {
		return err
	}
	saved := read
	slots := make(chan struct{}, r.cfg.Concurrency)
	lastCheck := time.Now()
	var chase time.Duration // the next tight-poll delay while events are committed but not visible yet
	for {
		if time.Since(lastCheck) > leaderCheck {
			if err := lock.Ping(ctx); err != nil {
				return fmt.Errorf("lock connection: %w", err)
			}
			lastCheck = time.Now()
		}
		_, woken := r.notifier.Generation()
		var batch []events.Envelope
		// While an event is unfinished (a provider outage), those after it wait with it: reading
		// stops once maxWaiting of them are held, so memory stays bounded however long it lasts.
		if len(wait) < r.maxWaiting {
			if batch, err = r.store.ReadLog(ctx, read, "", r.cfg.BatchSize); err != nil {
				return err
			}
			if len(batch) == 0 && r.readEmpty != nil {
				r.readEmpty()
			}
		} else if r.full != nil {
			r.full()
		}
		for _, e := range batch {
			read = e.Position
			if !slices.Contains(r.cfg.Types, e.Type) {
				// Nothing to do: the checkpoint may pass it once everything before it is done, which
				// the last waiting event's position now stands for.
				if len(wait) > 0 {
					wait[len(wait)-1].pos = e.Position
				}
				continue
			}
			it := processItem{pos: e.Position, done: make(chan struct{})}
			// Every slot may be busy for long (a provider outage): the lock is checked meanwhile too,
			// so that a runner that lost it stops before another one leads.
			for acquired := false; !acquired; {
				select {
				case slots <- struct{}{}:
					acquired = true
				case <-ctx.Done():
					return nil
				case <-time.After(leaderCheck):
					if err := lock.Ping(ctx); err != nil {
						return fmt.Errorf("lock connection: %w", err)
					}
					lastCheck = time.Now()
				}
			}
			go func(e events.Envelope) {
				defer close(it.done)
				defer func() { <-slots }()
				if err := r.cfg.Handle(ctx, e); err != nil && ctx.Err() == nil {
					r.cfg.Logger.Error("process manager gave up on an event", slog.String("process", r.cfg.Name),
						slog.String("event_id", e.ID.String()), slog.String("err", err.Error()))
				}
			}(e)
			wait = append(wait, it)
		}
		// Move the checkpoint past every event handled with all before it.
		done := 0
		for done < len(wait) && isClosed(wait[done].done) {
			done++
		}
		next := saved
		switch {
		case done == len(wait):
			next, wait = read, wait[:0]
		case done > 0:
			next, wait = wait[done-1].pos, wait[done:]
		}
		if next != saved {
			if err := r.save(ctx, next); err != nil {
				return err
			}
			saved = next
		}
		if len(batch) == r.cfg.BatchSize {
			continue
		}
		var front <-chan struct{}
		if len(wait) > 0 {
			front = wait[0].done
		}
		// A short read is not proof of being caught up: a committed event stays invisible while an
		// older transaction of the cluster runs, and that transaction's end wakes nobody when it
		// appended nothing. While the log holds events past the read, poll tightly, as the log tail
		// does, rather than wait for the next append or the poll.
		if len(wait) < r.maxWaiting {
			if head, err := r.store.LogHead(ctx); err == nil && read.Less(head) {
				chase = min(max(2*chase, minChase), maxChase)
				select {
				case <-ctx.Done():
					return nil
				case <-front:
				case <-time.After(chase):
				}
				continue
			}
		}
		chase = 0
		select {
		case <-ctx.Done():
			return nil
		case <-woken:
		case <-front:
		case <-time.After(r.cfg.PollInterval):
		}
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// checkpoint is the position after which events remain to handle.
func (r *ProcessRunner) checkpoint(ctx context.Context) (events.Position, error) {
	var tx string
	var off int64
	err := r.pool.QueryRow(ctx, `SELECT last_processed_transaction_id::text, COALESCE(offset_acked, 0) FROM events_offsets WHERE consumer_group = $1`,
		r.group()).Scan(&tx, &off)
	if errors.Is(err, pgx.ErrNoRows) {
		return events.Position{}, nil
	}
	if err != nil {
		return events.Position{}, fmt.Errorf("read checkpoint of %s: %w", r.cfg.Name, err)
	}
	id, err := strconv.ParseUint(tx, 10, 64)
	if err != nil {
		return events.Position{}, fmt.Errorf("read checkpoint of %s: %w", r.cfg.Name, err)
	}
	return events.Position{TxID: id, Offset: off}, nil
}

func (r *ProcessRunner) save(ctx context.Context, p events.Position) error {
	_, err := r.pool.Exec(ctx, `INSERT INTO events_offsets (consumer_group, offset_acked, last_processed_transaction_id)
		VALUES ($1, $2, $3::text::xid8)
		ON CONFLICT (consumer_group) DO UPDATE SET offset_acked = EXCLUDED.offset_acked,
			last_processed_transaction_id = EXCLUDED.last_processed_transaction_id`,
		r.group(), p.Offset, strconv.FormatUint(p.TxID, 10))
	if err != nil {
		return fmt.Errorf("save checkpoint of %s: %w", r.cfg.Name, err)
	}
	return nil
}

// group is the checkpoint's row: prefixed, so it never names a projection.
func (r *ProcessRunner) group() string { return "process." + r.cfg.Name }

// Checkpoint is the position the process manager handled every event up to (tests, tools).
func (r *ProcessRunner) Checkpoint(ctx context.Context) (events.Position, error) {
	return r.checkpoint(ctx)
}
