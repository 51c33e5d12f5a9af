package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/events"
	"taki/queries"
)

// Projection builds one read model from the log.
type Projection interface {
	// Name is the projection's consumer group and the name operators use.
	Name() string
	// Apply queues on b the read-model writes for ev. Queuing nothing means ev does not concern it.
	Apply(b *pgx.Batch, ev events.Envelope) error
	// Tables lists the read model's tables, which replay truncates.
	Tables() []string
}

// ProjectorConfig configures the projection runtime.
type ProjectorConfig struct {
	// BatchSize is watermill-sql's SubscribeBatchSize: rows read and committed per transaction.
	BatchSize int
	// PollInterval is the safety-net poll while no notification arrives.
	PollInterval time.Duration
	// ResendInterval is the pause before a failed message is tried again.
	ResendInterval time.Duration
	// CatchUpLag is how far behind the log's head (in events) a projection may be when this process
	// takes the lead of its consumer group and still go on with the subscriber alone; further behind,
	// it first catches up by the batched path (as a replay does), several times faster than the
	// subscriber's per-message savepoints and offset writes. Default 10,000; negative: never.
	CatchUpLag int
	Logger     *slog.Logger
}

func (c *ProjectorConfig) setDefaults() {
	if c.BatchSize == 0 {
		c.BatchSize = 500
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.ResendInterval == 0 {
		c.ResendInterval = 100 * time.Millisecond
	}
	if c.CatchUpLag == 0 {
		c.CatchUpLag = 10_000
	}
}

func (c ProjectorConfig) validate() error {
	if c.BatchSize < 1 {
		return errors.New("batch size must be positive")
	}
	if c.Logger == nil {
		return errors.New("logger is nil")
	}
	return nil
}

// Projector runs each projection as a watermill-sql consumer group on the event log. A projection's
// writes happen in the subscriber's transaction, the same one that advances its offset, so a crash can
// neither lose nor double-apply an event. Each message gets a savepoint: a failing message's writes are
// undone before it is retried (watermill-sql does not roll back on nack, its issue #224).
type Projector struct {
	pool     *pgxpool.Pool
	registry *events.Registry
	notifier *Notifier
	config   ProjectorConfig
	states   map[string]*projectionState
	order    []Projection
	running  sync.WaitGroup
	started  chan struct{}
	once     sync.Once

	mu         sync.Mutex
	runCtx     context.Context // Run's, while it runs: replays' catch-ups end with it
	catchingUp map[string]bool // projections a replay is bringing back by the batched path: again after it?

	// afterFlush, when set by tests, runs after a message's writes were sent and before its batch commits.
	afterFlush func(ctx context.Context, tx pgx.Tx, env events.Envelope)
}

// NewProjector returns a runtime for projections; Run starts them.
func NewProjector(pool *pgxpool.Pool, registry *events.Registry, notifier *Notifier, config ProjectorConfig, projections ...Projection) (*Projector, error) {
	config.setDefaults()
	if err := config.validate(); err != nil {
		return nil, fmt.Errorf("new projector: %w", err)
	}
	if pool == nil || registry == nil || notifier == nil {
		return nil, errors.New("new projector: pool, registry and notifier are required")
	}
	p := &Projector{
		pool: pool, registry: registry, notifier: notifier, config: config,
		states:     map[string]*projectionState{},
		started:    make(chan struct{}),
		catchingUp: map[string]bool{},
	}
	for _, proj := range projections {
		if proj == nil {
			return nil, errors.New("new projector: nil projection")
		}
		if _, dup := p.states[proj.Name()]; dup {
			return nil, fmt.Errorf("new projector: projection %s twice", proj.Name())
		}
		p.states[proj.Name()] = newProjectionState()
		p.order = append(p.order, proj)
	}
	return p, nil
}

var noAckDeadline time.Duration

// projectionState is what this process knows of one projection's progress.
type projectionState struct {
	mu        sync.Mutex
	pending   events.Position // acked in the open transaction
	committed events.Position // known committed
	changed   chan struct{}
	running   bool // this instance leads the consumer group
	standby   bool // another instance leads it; this one takes over when it goes
	catchUp   bool // leading, it catches up by the batched path before subscribing
	lastErr   string
	backoff   bool // a message failed in the last batch
	// resets counts replays started here: a batch that began before one must not set the checkpoint
	// it saw back over the reset (its commit may be noticed after the reset).
	resets uint64
}

// failed records a message that could not be applied; its batch committed what came before it.
func (s *projectionState) failed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = err.Error()
	s.backoff = true
}

// takeFailure reports whether a message failed in the last batch, and why.
func (s *projectionState) takeFailure() (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.backoff
	s.backoff = false
	return s.lastErr, b
}

func newProjectionState() *projectionState {
	return &projectionState{changed: make(chan struct{})}
}

func (s *projectionState) markPending(p events.Position) {
	s.mu.Lock()
	s.pending = p
	s.mu.Unlock()
}

// generation is the number of resets so far; a batch takes it when it begins.
func (s *projectionState) generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resets
}

// reset forgets the progress seen so far (a replay emptied the read model).
func (s *projectionState) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resets++
	s.committed, s.pending = events.Position{}, events.Position{}
}

// batchDone runs when a batch transaction that began at generation gen ends, committed or not.
func (s *projectionState) batchDone(committed bool, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !committed || gen != s.resets {
		s.pending = events.Position{}
		return
	}
	// This process leads the group, so its commits are the checkpoint, in order: one below the last
	// means the group was rewound (a replay started elsewhere), and waiters must see that.
	if !s.pending.IsZero() && s.pending != s.committed {
		s.committed = s.pending
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

// setCommitted sets the checkpoint as the database holds it, which may be behind what this process
// saw (the group was rewound since), unless a replay started here after generation gen, when it was
// read: the read may predate the replay's reset.
func (s *projectionState) setCommitted(p events.Position, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.resets != gen {
		return
	}
	if s.committed != p {
		s.committed = p
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

func (s *projectionState) leading() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// advanceTo moves the checkpoint forward to p, read from the database at generation gen (see
// setCommitted).
func (s *projectionState) advanceTo(p events.Position, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.resets != gen {
		return
	}
	if s.committed.Less(p) {
		s.committed = p
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

func (s *projectionState) snapshot() (events.Position, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.committed, s.changed
}

func (s *projectionState) setRole(leading, standby bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running, s.standby, s.catchUp = leading, standby, false
	if standby {
		s.lastErr = ""
	}
}

func (s *projectionState) setCatchingUp(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.catchUp = on
	if on {
		s.standby, s.lastErr = false, ""
	}
}

func (s *projectionState) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.lastErr = ""
	} else {
		s.lastErr = err.Error()
	}
}

// Run runs every projection until ctx ends and they have stopped. Each projection's consumer group
// is active in one instance at a time (see lead); Run returns an error only for a subscriber that
// cannot be built at all.
func (p *Projector) Run(ctx context.Context) error {
	logger := watermillLogger(p.config.Logger)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.mu.Lock()
	p.runCtx = ctx
	p.mu.Unlock()
	var ready sync.WaitGroup
	ready.Add(len(p.order))
	errc := make(chan error, len(p.order))
	for _, proj := range p.order {
		st := p.states[proj.Name()]
		if cp, gen, err := p.checkpointAt(ctx, proj.Name(), st); err == nil {
			st.advanceTo(cp, gen)
		}
		p.running.Add(1)
		go func() {
			defer p.running.Done()
			if err := p.lead(ctx, proj, st, logger, sync.OnceFunc(ready.Done)); err != nil {
				errc <- err
			}
		}()
	}
	go func() {
		ready.Wait()
		p.once.Do(func() { close(p.started) })
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		cancel()
	}
	// No catch-up may start once the wait below begins.
	p.mu.Lock()
	p.runCtx = nil
	p.mu.Unlock()
	p.running.Wait()
	return err
}

// subscribe starts proj's watermill-sql subscriber; msgs ends once ctx ends and the subscriber closes.
func (p *Projector) subscribe(ctx context.Context, proj Projection, st *projectionState, logger watermill.LoggerAdapter) (*wmsql.Subscriber, <-chan *message.Message, error) {
	sub, err := wmsql.NewSubscriber(guardedBeginner{pool: p.pool, state: st, afterFlush: p.afterFlush}, wmsql.SubscriberConfig{
		ConsumerGroup:  proj.Name(),
		SchemaAdapter:  eventLogSchema{batchSize: p.config.BatchSize},
		OffsetsAdapter: newOffsetsAdapter(),
		ResendInterval: p.config.ResendInterval,
		PollInterval:   p.config.PollInterval,
		// No ack deadline: on expiry watermill-sql abandons the message but still commits the batch
		// with the subscriber's live context. Handlers here either ack or nack promptly.
		AckDeadline:    &noAckDeadline,
		BackoffManager: &wakeBackoff{pool: p.pool, notifier: p.notifier, state: st, poll: p.config.PollInterval, done: ctx.Done(), logger: p.config.Logger, name: proj.Name(), chase: minChase},
	}, logger)
	if err != nil {
		return nil, nil, fmt.Errorf("subscribe %s: %w", proj.Name(), err)
	}
	msgs, err := sub.Subscribe(ctx, Topic)
	if err != nil {
		_ = sub.Close()
		return nil, nil, fmt.Errorf("subscribe %s: %w", proj.Name(), err)
	}
	return sub, msgs, nil
}

// Started is closed once every projection subscribed.
func (p *Projector) Started() <-chan struct{} { return p.started }

func (p *Projector) consume(proj Projection, st *projectionState, msgs <-chan *message.Message) {
	for msg := range msgs {
		gtx, err := txOf(msg)
		if err != nil {
			// Cannot happen with guardedBeginner; without its transaction nothing can be applied.
			p.config.Logger.Error("projection message without its transaction", slog.String("err", err.Error()))
			msg.Nack()
			continue
		}
		if gtx.isStopped() {
			msg.Ack() // past the failed message: ignored here, re-read in the next batch
			continue
		}
		if err := p.handle(proj, msg, gtx); err != nil {
			p.config.Logger.ErrorContext(msg.Context(), "projection cannot apply event; it will retry",
				slog.String("projection", proj.Name()), slog.String("event_id", msg.UUID), slog.String("err", err.Error()))
			// A nack would make watermill-sql resend within the same open transaction, forever.
			// Instead the batch ends before this message (see guardedTx.stop).
			gtx.stop(err)
		}
		msg.Ack()
	}
}

// handle queues the message's writes on its batch transaction; they are sent when the batch is acked.
func (p *Projector) handle(proj Projection, msg *message.Message, gtx *guardedTx) error {
	env, err := DecodeMessage(p.registry, msg)
	if err != nil {
		return err
	}
	b := &pgx.Batch{}
	if err := proj.Apply(b, env); err != nil {
		return fmt.Errorf("apply %s %s: %w", env.Type, env.ID, err)
	}
	if b.Len() > 0 {
		gtx.enqueue(env, b)
	}
	gtx.handed(env.Position)
	return nil
}

func txOf(msg *message.Message) (*guardedTx, error) {
	wtx, ok := wmsql.TxFromContext(msg.Context())
	if !ok {
		return nil, errors.New("no subscriber transaction in message context")
	}
	gtx, ok := wtx.(*guardedTx)
	if !ok {
		return nil, fmt.Errorf("subscriber transaction is %T, want *guardedTx", wtx)
	}
	return gtx, nil
}

// wakeBackoff is the subscribers' BackoffManager, called after every batch transaction. With nothing
// to read it waits for a wake-up (an append here, or another instance's NOTIFY) instead of sleeping a
// fixed interval. An empty read is not proof of being caught up, though: a committed event stays
// invisible while any older transaction of the cluster runs (that is what keeps late commits from
// being skipped). So after an empty read it checks whether the log holds events past its checkpoint,
// and while it does it polls with a short backoff; it idles only once nothing is left.
type wakeBackoff struct {
	pool     *pgxpool.Pool
	notifier *Notifier
	state    *projectionState
	poll     time.Duration
	done     <-chan struct{}
	logger   *slog.Logger
	name     string

	chase    time.Duration // next tight-poll delay; 0 when idle
	failures int
}

const (
	minChase = 500 * time.Microsecond
	maxChase = 100 * time.Millisecond
)

func (b *wakeBackoff) HandleError(_ watermill.LoggerAdapter, noMsg bool, err error) time.Duration {
	if why, failed := b.state.takeFailure(); failed {
		// A message failed and its batch committed only what came before it: retry it after a pause
		// rather than in a hot loop. Said at every retry: the projection stands still until it
		// passes (a read model's constraint, a schema an older binary does not know).
		b.failures++
		wait := min(time.Duration(b.failures)*100*time.Millisecond, 5*time.Second)
		b.logger.Error("projection cannot apply an event; it will retry", slog.String("projection", b.name),
			slog.String("err", why), slog.Duration("retry_in", wait))
		return wait
	}
	if err != nil {
		select {
		case <-b.done:
			return 0 // shutting down: the subscriber stops on its own
		default:
		}
		if isSerializationConflict(err) {
			// Another instance holds this consumer group; its commit moved the offset under us.
			return time.Duration(1+b.failures) * time.Millisecond
		}
		b.failures++
		b.state.setErr(err)
		wait := min(time.Duration(b.failures)*100*time.Millisecond, 5*time.Second)
		b.logger.Error("projection query failed", slog.String("projection", b.name), slog.String("err", err.Error()), slog.Duration("retry_in", wait))
		return wait
	}
	b.failures = 0
	if !noMsg {
		b.chase = minChase
		return 0
	}
	if b.chase > 0 {
		if b.behind() {
			d := b.chase
			b.chase = min(b.chase*2, maxChase)
			return d
		}
		b.chase = 0
	}
	_, woke := b.notifier.Generation()
	select {
	case <-woke:
	case <-time.After(b.poll):
	case <-b.done:
	}
	b.chase = minChase
	return 0
}

// behind reports whether the log holds events, visible or not yet, past the consumer group's committed
// checkpoint (whichever instance committed it).
func (b *wakeBackoff) behind() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	// The row sub-select keeps the planner on the primary key: a caught-up check reads one index entry.
	var one int
	err := b.pool.QueryRow(ctx, `SELECT 1 FROM events
		WHERE (transaction_id, "offset") > (SELECT last_processed_transaction_id, COALESCE(offset_acked, 0) FROM events_offsets WHERE consumer_group = $1)
		ORDER BY transaction_id, "offset" LIMIT 1`, b.name).Scan(&one)
	return !errors.Is(err, pgx.ErrNoRows)
}

func isSerializationConflict(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "could not serialize") || strings.Contains(s, "concurrent update") || strings.Contains(s, "deadlock")
}

// Checkpoint reads a consumer group's committed position from its offsets row.
func (p *Projector) Checkpoint(ctx context.Context, name string) (events.Position, error) {
	return readCheckpoint(ctx, p.pool, name)
}

func readCheckpoint(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, name string) (events.Position, error) {
	var tx string
	var off int64
	err := q.QueryRow(ctx, `SELECT last_processed_transaction_id::text, COALESCE(offset_acked, 0) FROM events_offsets WHERE consumer_group = $1`, name).Scan(&tx, &off)
	if errors.Is(err, pgx.ErrNoRows) {
		return events.Position{}, nil
	}
	if err != nil {
		return events.Position{}, fmt.Errorf("read checkpoint of %s: %w", name, err)
	}
	t, err := strconv.ParseUint(tx, 10, 64)
	if err != nil {
		return events.Position{}, fmt.Errorf("read checkpoint of %s: %w", name, err)
	}
	return events.Position{TxID: t, Offset: off}, nil
}

// checkpointAt reads name's checkpoint from the database, with st's generation from before the read
// (see setCommitted).
func (p *Projector) checkpointAt(ctx context.Context, name string, st *projectionState) (events.Position, uint64, error) {
	gen := st.generation()
	cp, err := p.Checkpoint(ctx, name)
	return cp, gen, err
}

// dbPollEvery bounds how long a waiter trusts only this process's view: another instance may be the
// active consumer of the group and commit progress this process never sees.
const dbPollEvery = 10 * time.Millisecond

// WaitFor implements bus.Waiter: it returns true once projection name has committed pos.
func (p *Projector) WaitFor(ctx context.Context, name string, pos events.Position, timeout time.Duration) (bool, error) {
	st, ok := p.states[name]
	if !ok {
		return false, fmt.Errorf("wait for unknown projection %q", name)
	}
	if !st.leading() {
		// Another instance leads: what this one last saw of the checkpoint may predate a rewind.
		cp, gen, err := p.checkpointAt(ctx, name, st)
		if err != nil {
			return false, err
		}
		st.setCommitted(cp, gen)
	}
	if committed, _ := st.snapshot(); committed.Less(pos) {
		// A token beyond the end of the log was not issued by this log (or not yet committed): waiting
		// cannot help, and every waiter costs polls.
		head, err := logHead(ctx, p.pool)
		if err != nil {
			return false, err
		}
		if head.Less(pos) {
			return false, nil
		}
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		committed, changed := st.snapshot()
		if !committed.Less(pos) {
			return true, nil
		}
		select {
		case <-changed:
		case <-time.After(dbPollEvery):
			if cp, gen, err := p.checkpointAt(ctx, name, st); err == nil {
				st.advanceTo(cp, gen)
			}
		case <-deadline.C:
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// logHead returns the position of the log's last event (zero for an empty log).
func logHead(ctx context.Context, pool *pgxpool.Pool) (events.Position, error) {
	return scanPosition(pool.QueryRow(ctx, headSQL("")), "read log head")
}

// headSQL reads the last event's position, of those matching where (no condition when empty). The
// ORDER BY names the table's column: a bare transaction_id would sort by the output column of the same
// name, the text, and put transaction 99999 after 100000.
func headSQL(where string) string {
	if where != "" {
		where = " WHERE " + where
	}
	return `SELECT e.transaction_id::text, e."offset" FROM events e` + where + `
		ORDER BY e.transaction_id DESC, e."offset" DESC LIMIT 1`
}

// Statuses reports every projection's checkpoint, lag and state as this process sees it.
func (p *Projector) Statuses(ctx context.Context) ([]queries.ProjectionStatus, error) {
	out := make([]queries.ProjectionStatus, 0, len(p.order))
	for _, proj := range p.order {
		s, err := ProjectionStatus(ctx, p.pool, proj.Name())
		if err != nil {
			return nil, err
		}
		st := p.states[proj.Name()]
		st.mu.Lock()
		switch {
		case st.lastErr != "":
			s.Status = "failing: " + st.lastErr
		case p.isCatchingUp(proj.Name()):
			s.Status = "replaying"
		case st.catchUp:
			s.Status = "catching up"
		case st.running:
			s.Status = "running"
		case st.standby:
			s.Status = "standby"
		default:
			s.Status = "stopped"
		}
		st.mu.Unlock()
		out = append(out, s)
	}
	return out, nil
}

// Replay empties a projection's read model and resets its offset, holding the consumer group's lock
// (the offsets row, which every batch locks FOR UPDATE), so no batch of the old run can commit on top of
// the emptied tables. While Run runs, the projection is then brought back to the log head in the
// background by the batched catch-up path, which takes turns with the group's subscriber (on whichever
// instance leads it) under the same lock; a replay asked for during a catch-up only resets, and the
// running catch-up starts over from the reset offset.
func (p *Projector) Replay(ctx context.Context, name string) (bool, error) {
	var proj Projection
	for _, pr := range p.order {
		if pr.Name() == name {
			proj = pr
		}
	}
	if proj == nil {
		return false, nil
	}
	if err := ResetProjection(ctx, p.pool, proj); err != nil {
		return true, err
	}
	p.states[name].reset()
	p.startCatchUp(proj)
	return true, nil
}

// startCatchUp runs CatchUp for proj in the background unless Run does not run. If one already runs,
// it runs again once that one ends: a catch-up that was finishing may have missed the reset.
func (p *Projector) startCatchUp(proj Projection) {
	p.mu.Lock()
	defer p.mu.Unlock()
	name := proj.Name()
	if p.runCtx == nil {
		return
	}
	if _, running := p.catchingUp[name]; running {
		p.catchingUp[name] = true
		return
	}
	ctx := p.runCtx
	p.catchingUp[name] = false
	p.running.Add(1)
	go func() {
		defer p.running.Done()
		for {
			start := time.Now()
			n, err := CatchUp(ctx, p.pool, p.registry, []Projection{proj}, CatchUpOptions{BatchSize: serverCatchUpBatch})
			switch {
			case err != nil && ctx.Err() == nil:
				// The group's subscriber goes on from wherever the catch-up stopped.
				p.config.Logger.Error("replay catch-up failed; the subscriber continues it", slog.String("projection", name), slog.String("err", err.Error()))
			case err == nil:
				p.config.Logger.Info("replay caught up", slog.String("projection", name), slog.Int64("events", n), slog.Duration("took", time.Since(start)))
			}
			p.mu.Lock()
			again := p.catchingUp[name] && err == nil
			if !again {
				delete(p.catchingUp, name)
			} else {
				p.catchingUp[name] = false
			}
			p.mu.Unlock()
			if !again {
				return
			}
		}
	}()
}

// serverCatchUpBatch is the batch size of a running server's catch-ups, smaller than the CLI's: each
// batch holds back this cluster's log readers while it runs, and here they serve clients meanwhile.
const serverCatchUpBatch = 2000

func (p *Projector) isCatchingUp(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, running := p.catchingUp[name]
	return running
}

// ResetProjection truncates proj's tables and rewinds its offset in one transaction under the consumer
// group's lock.
func ResetProjection(ctx context.Context, pool *pgxpool.Pool, proj Projection) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO events_offsets (consumer_group, offset_acked, last_processed_transaction_id)
			VALUES ($1, 0, '0') ON CONFLICT DO NOTHING`, proj.Name()); err != nil {
			return fmt.Errorf("reset %s: %w", proj.Name(), err)
		}
		if _, err := tx.Exec(ctx, `SELECT 1 FROM events_offsets WHERE consumer_group = $1 FOR UPDATE`, proj.Name()); err != nil {
			return fmt.Errorf("lock %s: %w", proj.Name(), err)
		}
		tables := make([]string, len(proj.Tables()))
		for i, t := range proj.Tables() {
			tables[i] = pgx.Identifier{t}.Sanitize()
		}
		if len(tables) > 0 {
			if _, err := tx.Exec(ctx, `TRUNCATE `+strings.Join(tables, ", ")); err != nil {
				return fmt.Errorf("truncate %s: %w", proj.Name(), err)
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE events_offsets SET offset_acked = 0, last_processed_transaction_id = '0' WHERE consumer_group = $1`, proj.Name()); err != nil {
			return fmt.Errorf("rewind %s: %w", proj.Name(), err)
		}
		return nil
	})
}

// Running reports whether every projection runs here (by its subscriber or a batched catch-up) or
// stands by for the instance that runs it (readiness).
func (p *Projector) Running() error {
	for _, proj := range p.order {
		st := p.states[proj.Name()]
		st.mu.Lock()
		running := st.running || st.standby || st.catchUp
		st.mu.Unlock()
		if !running {
			return fmt.Errorf("projection %s is not running", proj.Name())
		}
	}
	return nil
}

// ProjectionStatus reads a consumer group's checkpoint and lag from the database alone (the CLI uses it
// without running projections).
func ProjectionStatus(ctx context.Context, pool *pgxpool.Pool, name string) (queries.ProjectionStatus, error) {
	cp, err := readCheckpoint(ctx, pool, name)
	if err != nil {
		return queries.ProjectionStatus{}, err
	}
	var lag int64
	err = pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE (transaction_id, "offset") > ($1::text::xid8, $2)`,
		strconv.FormatUint(cp.TxID, 10), cp.Offset).Scan(&lag)
	if err != nil {
		return queries.ProjectionStatus{}, fmt.Errorf("lag of %s: %w", name, err)
	}
	return queries.ProjectionStatus{Name: name, Checkpoint: cp.String(), LagEvents: lag, Status: "unknown"}, nil
}
