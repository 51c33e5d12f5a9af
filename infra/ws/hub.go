package ws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
	"github.com/prometheus/client_golang/prometheus"

	"taki/commands"
	"taki/events"
)

// Close codes the hub sends besides melody's own.
const (
	// CloseSlowConsumer closes a socket that fell SendBuffer frames behind. "Try again later" tells
	// the client the socket was healthy but must reconnect (with ?since=) to catch up.
	CloseSlowConsumer = websocket.CloseTryAgainLater
	slowReason        = "too slow to keep up: reconnect with ?since="
	shutdownReason    = "server shutting down: reconnect"
)

// Errors of Client.Send. Neither loses a frame silently: the socket is closed (or closing) and the
// client recovers what it missed with ?since=.
var (
	ErrSlowConsumer = errors.New("websocket too slow: closed to be recovered with ?since=")
	ErrSocketClosed = errors.New("websocket closed")
)

// clientKey names our per-socket state among melody's session keys. It is passed to
// HandleRequestWithKeys, so the session never exists without it.
const clientKey = "taki.ws.client"

// FrameHandler handles one client frame type. ctx ends when the socket closes. A returned error
// answers the client with an error frame carrying ProblemFor(err) and the frame's client_msg_id; the
// socket stays open. Handlers run one at a time per socket, in arrival order, on the socket's read
// loop: a slow handler slows that socket's reading, which is the back-pressure it deserves.
type FrameHandler func(ctx context.Context, c *Client, f ClientFrame) error

// Hub runs Taki's WebSockets on melody: the GET /ws handshake (Handle), a user → sockets index for
// delivery (SendToUsers), per-socket flow control, client frame dispatch, and metrics.
type Hub struct {
	cfg        Config
	log        *slog.Logger
	m          *melody.Melody
	origins    map[string]struct{}
	handlers   map[string]FrameHandler
	metrics    metrics
	maxPending int64

	// upgrading counts handshakes between the closed check and their registration in the index.
	// Close waits for them before it closes every indexed socket, so none slips past it.
	upgrading sync.WaitGroup
	closeOnce sync.Once
	drainOnce sync.Once
	stopOnce  sync.Once
	drained   chan struct{}

	mu      sync.RWMutex
	users   map[uuid.UUID]map[*melody.Session]*Client
	sockets int
	closed  bool

	// recoveries counts the ?since= recoveries running; Close waits for them. recoverySlots bounds
	// how many read the log at once.
	recoveries    sync.WaitGroup
	recoverySlots chan struct{}

	// Session checks (sessions.go): invalidations counts SessionsChanged calls, so that a handshake
	// can tell whether one came between its session check and its socket's indexing. The users whose
	// sockets await a check are in checkUsers (or checkAll), guarded by checkMu; checkWake wakes the
	// checker goroutine, which stopChecks ends and which closes checksDone when it returns.
	invalidations atomic.Uint64
	checkMu       sync.Mutex
	checkUsers    map[uuid.UUID]struct{}
	checkAll      bool
	checkWake     chan struct{}
	stopChecks    context.CancelFunc
	checksDone    chan struct{}
	// checkBatch is how many session ids one LiveSessions call gets at most.
	checkBatch int

	// testHookIndexChanged, when set (tests only), runs after every change of the index.
	testHookIndexChanged func()
}

// Client is one open socket of one user, as frame handlers see it.
type Client struct {
	hub     *Hub
	session *melody.Session
	userID  uuid.UUID
	// connected is closed once connect registered the socket: its handshake is over.
	connected chan struct{}
	// sessionID is the public id of the session that authorised the socket: the cookie's, or the one
	// that asked for the token. The socket is closed (1008) once that session ends.
	sessionID uuid.UUID
	// checkedAt is the hub's invalidation count before the handshake checked the session.
	checkedAt uint64
	via       string
	ctx       context.Context
	cancel    context.CancelFunc

	// pending counts this socket's text frames that are queued or being written. Send keeps it below
	// SendBuffer, so melody's queue always has a free slot for the close frame: melody drops a frame
	// silently when the queue is full (Session.Write returns nil and only reports to the error
	// callback), and a close frame dropped so would leave a stalled socket open forever.
	pending atomic.Int64
	// closing is set once the socket is being closed (too slow, or gone); frames are refused after.
	closing atomic.Bool

	// since is the position a recovering socket asked for (?since=), nil for a live-only one.
	since *events.Position
	// room, for a recovering socket, gets a signal when a queued frame went out, so that recovery
	// waits for the socket to drain instead of overrunning it.
	room chan struct{}
	// stream orders the log's event frames on this socket (see SendEvent).
	stream eventStream
}

type metrics struct {
	sockets       prometheus.Gauge
	framesSent    prometheus.Counter
	slowCloses    prometheus.Counter
	dropped       prometheus.Counter
	sessionCloses prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		sockets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "taki_ws_sockets", Help: "Open WebSockets on this instance."}),
		framesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "taki_ws_frames_sent_total", Help: "Frames written to WebSockets."}),
		slowCloses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "taki_ws_slow_closes_total",
			Help: "WebSockets closed (1013) because they fell a whole send buffer behind; their clients recover with ?since=."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "taki_ws_dropped_total",
			Help: "Frames not queued because their socket was closed or being closed; the client recovers them with ?since=."}),
		sessionCloses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "taki_ws_session_closes_total",
			Help: "WebSockets closed (1008) because the session that opened them ended or expired."}),
	}
	all := []prometheus.Collector{m.sockets, m.framesSent, m.slowCloses, m.dropped, m.sessionCloses}
	for i, c := range all {
		if err := reg.Register(c); err != nil {
			// Leave the registry as it was, so that a caller may retry or build something else.
			for _, done := range all[:i] {
				reg.Unregister(done)
			}
			return metrics{}, fmt.Errorf("register websocket metrics: %w", err)
		}
	}
	return m, nil
}

// NewHub returns a Hub ready to serve Handle. It starts melody's goroutine and the session checker:
// release them with Close.
func NewHub(cfg Config) (*Hub, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("websocket hub: %w", err)
	}
	origins := make(map[string]struct{}, len(cfg.AllowedOrigins))
	for _, o := range cfg.AllowedOrigins {
		n, _ := normalizeOrigin(o) // validated above
		origins[n] = struct{}{}
	}
	handlers := map[string]FrameHandler{TypePing: handlePing}
	for typ, fn := range cfg.Handlers {
		handlers[typ] = fn
	}
	met, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	h := &Hub{
		cfg:        cfg,
		log:        cfg.Logger,
		origins:    origins,
		handlers:   handlers,
		metrics:    met,
		maxPending: int64(cfg.SendBuffer - 1), // the last slot is the close frame's
		drained:    make(chan struct{}),
		users:      make(map[uuid.UUID]map[*melody.Session]*Client),
		checkUsers: make(map[uuid.UUID]struct{}),
		checkWake:  make(chan struct{}, 1),
		checksDone: make(chan struct{}),
		checkBatch: sessionCheckBatch,
	}
	if cfg.Recovery != nil {
		h.recoverySlots = make(chan struct{}, cfg.Recovery.MaxConcurrent)
	}
	// melody.New starts a goroutine, so it comes after everything that can fail.
	m := melody.New()
	// gorilla answers a bigger frame with close 1009 as soon as its header announces the size.
	m.Config.MaxMessageSize = MaxFrameBytes
	m.Config.PingPeriod = cfg.PingPeriod
	m.Config.PongWait = cfg.PongWait
	m.Config.WriteWait = cfg.WriteWait
	m.Config.MessageBufferSize = cfg.SendBuffer
	m.Upgrader = h.upgrader()
	m.HandleConnect(h.connect)
	m.HandleDisconnect(h.disconnect)
	m.HandleMessage(h.message)
	m.HandleMessageBinary(h.binaryMessage)
	m.HandleSentMessage(h.sent)
	m.HandleError(h.socketError)
	h.m = m
	checks, stop := context.WithCancel(context.Background())
	h.stopChecks = stop
	go h.runSessionChecks(checks)
	return h, nil
}

// SendToUsers queues frame on every open socket of the given users (each once, however often its user
// is listed), and returns how many sockets it was queued on. It never blocks on a socket: one whose
// queue is full is closed with 1013 instead (its client reconnects with ?since=), and the frame
// counts as dropped. frame must not be changed afterwards: every socket shares it. Frames reach a
// socket in the order of the calls that queued them, so a publisher calling from one goroutine keeps
// its order; calls from several goroutines have none between them.
func (h *Hub) SendToUsers(userIDs []uuid.UUID, frame []byte) int {
	var buf [32]*Client
	n := 0
	for _, c := range h.clientsOf(userIDs, buf[:0]) {
		if c.Send(frame) == nil {
			n++
		}
	}
	return n
}

// SendEvent queues frame, the frame of the log event at pos, on every open socket of the given users,
// as SendToUsers does, and returns how many sockets took it. Event frames are ordered per socket by
// position: a socket skips a position it has passed already (it got it while recovering with
// ?since=), and a socket still recovering holds the frame until its recovery reaches the live
// events. Publishers call it in log order, from one goroutine.
func (h *Hub) SendEvent(userIDs []uuid.UUID, pos events.Position, frame []byte) int {
	var buf [32]*Client
	n := 0
	for _, c := range h.clientsOf(userIDs, buf[:0]) {
		if c.sendEvent(pos, frame) == nil {
			n++
		}
	}
	return n
}

// SendResync queues resync_required at pos, the position of an event whose frames could not be built
// (Fanout.Unreadable), on every open socket of the given users, or of everyone when all is set, as
// SendEvent queues an event frame. It returns how many sockets took it.
func (h *Hub) SendResync(userIDs []uuid.UUID, all bool, pos events.Position) (int, error) {
	frame, err := EncodeFrame(ServerFrame{Type: TypeResyncRequired, Position: pos.String()})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range h.socketsOf(userIDs, all) {
		if c.sendEvent(pos, frame) == nil {
			n++
		}
	}
	return n, nil
}

// Connected reports whether the user has a socket open on this instance.
func (h *Hub) Connected(userID uuid.UUID) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.users[userID]) > 0
}

// clientsOf appends the open sockets of the given users (each user once) to targets. The sockets are
// collected under the read lock and written after it, so that nothing a write may do (close a slow
// socket, log) runs under the index lock.
func (h *Hub) clientsOf(userIDs []uuid.UUID, targets []*Client) []*Client {
	var seen map[uuid.UUID]struct{}
	if len(userIDs) > 8 {
		seen = make(map[uuid.UUID]struct{}, len(userIDs))
	}
	h.mu.RLock()
	for i, id := range userIDs {
		// A user listed twice must not get the frame twice.
		if seen != nil {
			if _, dup := seen[id]; dup {
				continue
			}
			seen[id] = struct{}{}
		} else if slices.Contains(userIDs[:i], id) {
			continue
		}
		for _, c := range h.users[id] {
			targets = append(targets, c)
		}
	}
	h.mu.RUnlock()
	return targets
}

// socketsOf returns the open sockets of the given users, or every open socket when all is set.
func (h *Hub) socketsOf(userIDs []uuid.UUID, all bool) []*Client {
	if !all {
		return h.clientsOf(userIDs, nil)
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]*Client, 0, h.sockets)
	for _, set := range h.users {
		for _, c := range set {
			out = append(out, c)
		}
	}
	return out
}

// Sockets returns how many sockets are open on this instance.
func (h *Hub) Sockets() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.sockets
}

// Close refuses new sockets (503), waits for handshakes in flight (each bounded by
// HandshakeTimeout), closes every socket with 1001 and waits until they are gone or ctx ends. Once
// they are gone it stops melody. It is safe to call again, e.g. after a ctx that ended too early.
func (h *Hub) Close(ctx context.Context) error {
	h.closeOnce.Do(func() {
		// Every socket is closed below: checking their sessions is pointless from now on.
		h.stopChecks()
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
		h.upgrading.Wait()
		h.mu.RLock()
		clients := make([]*Client, 0, h.sockets)
		for _, set := range h.users {
			for _, c := range set {
				clients = append(clients, c)
			}
		}
		empty := h.sockets == 0
		h.mu.RUnlock()
		// Each socket is closed through its own queue, not with melody.Close: melody's socket
		// goroutines check "closed" and then unregister on a channel that nobody reads once melody is
		// closed, so a socket ending while melody closes would block forever and never reach
		// disconnect. melody is stopped only when no socket is left.
		for _, c := range clients {
			c.closeWith(websocket.CloseGoingAway, shutdownReason)
		}
		if empty {
			h.drainOnce.Do(func() { close(h.drained) })
		}
	})
	select {
	case <-h.drained:
	case <-ctx.Done():
		return fmt.Errorf("close websockets: %d still open: %w", h.Sockets(), ctx.Err())
	}
	// Recoveries end with their sockets; wait for them to leave the log alone.
	recovered := make(chan struct{})
	go func() { h.recoveries.Wait(); close(recovered) }()
	select {
	case <-recovered:
	case <-ctx.Done():
		return fmt.Errorf("close websockets: recoveries still running: %w", ctx.Err())
	}
	select {
	case <-h.checksDone:
		h.stopOnce.Do(func() {
			if err := h.m.Close(); err != nil && !errors.Is(err, melody.ErrClosed) {
				h.log.Warn("stop melody", slog.String("error", err.Error()))
			}
		})
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close websockets: session check still running: %w", ctx.Err())
	}
}

// UserID returns the user the socket belongs to.
func (c *Client) UserID() uuid.UUID { return c.userID }

// Send queues frame on this socket. A socket that already has SendBuffer-1 frames waiting is closed
// with 1013 (once) rather than fed further or allowed to lose frames silently; Send then answers
// ErrSlowConsumer, and ErrSocketClosed for a socket that is closing or gone.
func (c *Client) Send(frame []byte) error {
	if c.closing.Load() {
		c.hub.metrics.dropped.Inc()
		return ErrSocketClosed
	}
	if c.pending.Add(1) > c.hub.maxPending {
		c.pending.Add(-1)
		c.hub.metrics.dropped.Inc()
		c.closeSlow()
		return ErrSlowConsumer
	}
	if err := c.session.Write(frame); err != nil {
		c.pending.Add(-1)
		c.hub.metrics.dropped.Inc()
		return ErrSocketClosed
	}
	return nil
}

// SendFrame encodes f and queues it on this socket.
func (c *Client) SendFrame(f ServerFrame) error {
	b, err := EncodeFrame(f)
	if err != nil {
		return err
	}
	return c.Send(b)
}

// closeSlow closes a socket that fell behind. A client that still reads gets every frame queued
// before the close, then 1013; one that does not read at all is cut off by WriteWait.
func (c *Client) closeSlow() {
	if c.closeWith(CloseSlowConsumer, slowReason) {
		c.hub.metrics.slowCloses.Inc()
		c.hub.log.WarnContext(c.ctx, "closing a websocket too slow to keep up",
			slog.Int("send_buffer", c.hub.cfg.SendBuffer))
	}
}

// closeWith queues a close frame, in the slot Send keeps free, unless the socket is closing already;
// it reports whether it did. Frames are refused from then on.
func (c *Client) closeWith(code int, reason string) bool {
	if !c.closing.CompareAndSwap(false, true) {
		return false
	}
	_ = c.session.CloseWithMsg(websocket.FormatCloseMessage(code, reason))
	return true
}

func (c *Client) sendError(clientMsgID string, frameType string, err error) {
	p, internal := ProblemFor(err)
	if internal {
		c.hub.log.ErrorContext(c.ctx, "websocket frame failed", slog.String("frame_type", frameType),
			slog.String("error", err.Error()))
	}
	if err := c.SendFrame(ServerFrame{Type: TypeError, ClientMsgID: clientMsgID, Problem: &p}); err != nil {
		c.hub.log.DebugContext(c.ctx, "websocket error frame not sent", slog.String("error", err.Error()))
	}
}

func handlePing(_ context.Context, c *Client, _ ClientFrame) error {
	return c.SendFrame(ServerFrame{Type: TypePong})
}

func clientOf(s *melody.Session) *Client {
	v, _ := s.Get(clientKey)
	c, _ := v.(*Client)
	return c
}

// connect greets a new socket and indexes it. melody runs it before the socket's write loop starts;
// the hello is queued before the socket is indexed, so that no frame sent to the user can precede it.
func (h *Hub) connect(s *melody.Session) {
	defer h.upgrading.Done()
	c := clientOf(s)
	c.session = s
	// melody keeps the handshake request for the socket's life, and with it the request's context
	// (the HTTP layer's per-request state). Nothing reads it after the handshake; melody set it on
	// this goroutine, before calling connect, and never reads it itself.
	s.Request = nil
	if err := c.SendFrame(ServerFrame{Type: TypeHello, Data: helloData{UserID: c.userID}}); err != nil {
		h.log.DebugContext(c.ctx, "websocket hello not sent", slog.String("error", err.Error()))
	}
	if c.since != nil {
		// Before the socket is indexed: no event frame may pass the recovery.
		c.stream.beginRecovery(*c.since)
		h.recoveries.Add(1)
		defer func() { go h.recover(c, *c.since) }()
	}
	h.mu.Lock()
	set := h.users[c.userID]
	if set == nil {
		set = make(map[*melody.Session]*Client, 1)
		h.users[c.userID] = set
	}
	set[s] = c
	h.sockets++
	h.mu.Unlock()
	// A session that ended after the handshake checked it, but whose invalidation looked for the
	// user's sockets before this one was indexed, is caught here: the count moved since the check.
	if h.invalidations.Load() != c.checkedAt {
		h.queueCheck(c.userID)
	}
	h.metrics.sockets.Inc()
	h.indexChanged()
	h.log.DebugContext(c.ctx, "websocket open", slog.String("via", c.via))
	close(c.connected)
}

type helloData struct {
	UserID uuid.UUID `json:"user_id"`
}

// disconnect forgets a socket once both its loops ended.
func (h *Hub) disconnect(s *melody.Session) {
	c := clientOf(s)
	c.closing.Store(true)
	c.cancel()
	h.mu.Lock()
	if set := h.users[c.userID]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(h.users, c.userID)
		}
	}
	h.sockets--
	drained := h.closed && h.sockets == 0
	h.mu.Unlock()
	h.metrics.sockets.Dec()
	if drained {
		h.drainOnce.Do(func() { close(h.drained) })
	}
	h.indexChanged()
	h.log.DebugContext(c.ctx, "websocket closed")
}

func (h *Hub) indexChanged() {
	if h.testHookIndexChanged != nil {
		h.testHookIndexChanged()
	}
}

// message dispatches a client text frame. Malformed frames, unknown types and failed handlers are
// answered with an error frame and the socket stays open: a client bug should not cost the user
// their live updates.
func (h *Hub) message(s *melody.Session, msg []byte) {
	c := clientOf(s)
	var f ClientFrame
	defer func() {
		// melody runs this on the socket's read loop without a recover: a panicking handler would
		// otherwise take the whole process down.
		if v := recover(); v != nil {
			h.log.ErrorContext(c.ctx, "websocket frame handler panicked", slog.String("frame_type", f.Type),
				slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
			c.sendError(f.ClientMsgID, f.Type, errors.New("handler panicked"))
		}
	}()
	f, err := DecodeClientFrame(msg)
	if err != nil {
		c.sendError(f.ClientMsgID, "", err)
		return
	}
	handle, ok := h.handlers[f.Type]
	if !ok {
		c.sendError(f.ClientMsgID, f.Type, commands.Invalid([]commands.FieldError{{Field: "type",
			Message: fmt.Sprintf("unknown frame type %q", f.Type)}}))
		return
	}
	if err := handle(c.ctx, c, f); err != nil {
		c.sendError(f.ClientMsgID, f.Type, err)
	}
}

func (h *Hub) binaryMessage(s *melody.Session, _ []byte) {
	clientOf(s).sendError("", "", &MalformedFrameError{Reason: "binary frames are not supported; send JSON text frames"})
}

// sent frees the frame's slot once it is on the wire.
func (h *Hub) sent(s *melody.Session, _ []byte) {
	c := clientOf(s)
	c.pending.Add(-1)
	if c.room != nil {
		select {
		case c.room <- struct{}{}:
		default:
		}
	}
	h.metrics.framesSent.Inc()
}

// socketError receives melody's read, write and queue errors. It may run inside Session.Write, so it
// takes no lock and calls nothing of melody's.
func (h *Hub) socketError(s *melody.Session, err error) {
	switch {
	case errors.Is(err, melody.ErrMessageBufferFull):
		// Cannot happen: Send keeps a slot free and only one close frame is ever queued. Should a
		// melody change break that, the drop is at least counted and seen.
		h.metrics.dropped.Inc()
		h.log.Warn("websocket queue full: frame dropped", slog.String("error", err.Error()))
	case errors.Is(err, melody.ErrWriteClosed), errors.Is(err, melody.ErrSessionClosed):
	case errors.Is(err, websocket.ErrReadLimit):
		h.log.InfoContext(clientOf(s).ctx, "websocket frame over the size limit: closed with 1009",
			slog.Int("limit", MaxFrameBytes))
	case websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived):
	default:
		if c := clientOf(s); c != nil {
			h.log.DebugContext(c.ctx, "websocket ended", slog.String("error", err.Error()))
		}
	}
}
