// Package bus is Taki's in-process mediator: Send dispatches a command to its one handler and Ask a query
// to its one handler, each through the same middleware chain (logging, metrics, validation, conflict
// retry, read-your-writes waits). HTTP, WebSocket and CLI all go through it; none of them touches SQL.
package bus

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/google/uuid"

	"taki/events"
	"taki/infra/logging"
)

// CommandHandler decides and appends events for one command type C, answering R.
type CommandHandler[C, R any] interface {
	Handle(ctx context.Context, cmd C) (R, error)
}

// QueryHandler answers one query type Q from read models.
type QueryHandler[Q, R any] interface {
	Handle(ctx context.Context, q Q) (R, error)
}

// None is the result of commands that answer nothing but success.
type None struct{}

// Kind tells middleware whether a message is a command or a query.
type Kind int

// Message kinds.
const (
	KindCommand Kind = iota
	KindQuery
)

func (k Kind) String() string {
	if k == KindCommand {
		return "command"
	}
	return "query"
}

// Message is what middleware sees of one dispatch.
type Message struct {
	Kind Kind
	Name string // Go type name, e.g. "commands.RegisterUser"
	Body any
}

// Next calls the rest of the chain.
type Next func(ctx context.Context, m Message) (any, error)

// Middleware wraps every dispatch. It must call next at most... as often as it means to run the handler.
type Middleware func(ctx context.Context, m Message, next Next) (any, error)

type route struct {
	name string
	call Next
}

// Bus routes commands and queries to their handlers. Register every handler before serving.
type Bus struct {
	mu         sync.RWMutex
	commands   map[reflect.Type]route
	queries    map[reflect.Type]route
	middleware []Middleware
}

// New returns a bus whose dispatches run through middleware, outermost first.
func New(middleware ...Middleware) *Bus {
	return &Bus{
		commands:   map[reflect.Type]route{},
		queries:    map[reflect.Type]route{},
		middleware: middleware,
	}
}

// ErrNoHandler means a message type was dispatched that nothing registered: a programming error.
var ErrNoHandler = errors.New("no handler registered")

// RegisterCommand makes h the handler of command type C. It panics on a nil handler or a second handler,
// which are wiring mistakes caught at start-up.
func RegisterCommand[C, R any](b *Bus, h CommandHandler[C, R]) {
	register(b, b.commands, KindCommand, h, func(ctx context.Context, m Message) (any, error) {
		return h.Handle(ctx, m.Body.(C))
	}, reflect.TypeFor[C]())
}

// RegisterQuery makes h the handler of query type Q.
func RegisterQuery[Q, R any](b *Bus, h QueryHandler[Q, R]) {
	register(b, b.queries, KindQuery, h, func(ctx context.Context, m Message) (any, error) {
		return h.Handle(ctx, m.Body.(Q))
	}, reflect.TypeFor[Q]())
}

func register(b *Bus, table map[reflect.Type]route, k Kind, h any, call Next, t reflect.Type) {
	if h == nil || (reflect.ValueOf(h).Kind() == reflect.Pointer && reflect.ValueOf(h).IsNil()) {
		panic(fmt.Sprintf("bus: nil %s handler for %s", k, t))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, dup := table[t]; dup {
		panic(fmt.Sprintf("bus: second %s handler for %s", k, t))
	}
	table[t] = route{name: t.String(), call: call}
}

// Send runs cmd through the middleware to its handler. It answers the handler's result and the
// consistency token of the events it appended (zero when it appended none).
func Send[R, C any](ctx context.Context, b *Bus, cmd C) (R, events.Position, error) {
	rec := &recorder{}
	ctx = context.WithValue(ctx, recorderKey{}, rec)
	// Each dispatch is the cause of the events it appends; the correlation id (the request's) ties
	// them to everything else the client's action caused.
	if id, err := uuid.NewV7(); err == nil {
		ctx = logging.WithCausationID(ctx, id.String())
	}
	v, err := dispatch[R](ctx, b, b.commands, KindCommand, cmd)
	return v, rec.position(), err
}

// Ask runs q through the middleware to its handler.
func Ask[R, Q any](ctx context.Context, b *Bus, q Q) (R, error) {
	return dispatch[R](ctx, b, b.queries, KindQuery, q)
}

func dispatch[R any](ctx context.Context, b *Bus, table map[reflect.Type]route, k Kind, body any) (R, error) {
	var zero R
	b.mu.RLock()
	r, ok := table[reflect.TypeOf(body)]
	b.mu.RUnlock()
	if !ok {
		return zero, fmt.Errorf("%s %T: %w", k, body, ErrNoHandler)
	}
	next := r.call
	for i := len(b.middleware) - 1; i >= 0; i-- {
		mw, inner := b.middleware[i], next
		next = func(ctx context.Context, m Message) (any, error) { return mw(ctx, m, inner) }
	}
	out, err := next(ctx, Message{Kind: k, Name: r.name, Body: body})
	if err != nil {
		return zero, err
	}
	v, ok := out.(R)
	if !ok {
		return zero, fmt.Errorf("%s %s answered %T, caller expects %T", k, r.name, out, zero)
	}
	return v, nil
}

// recorder collects the log position of the events a command appended, for the consistency token.
type recorder struct {
	mu  sync.Mutex
	pos events.Position
}

type recorderKey struct{}

func (r *recorder) record(p events.Position) {
	r.mu.Lock()
	if r.pos.Less(p) {
		r.pos = p
	}
	r.mu.Unlock()
}

func (r *recorder) reset() {
	r.mu.Lock()
	r.pos = events.Position{}
	r.mu.Unlock()
}

func (r *recorder) position() events.Position {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pos
}

// Observe makes pos part of the consistency token of the Send running in ctx (if any): the write
// model reports the position of the state each command decided on, so a command that changed nothing
// still answers a token covering what it showed.
func Observe(ctx context.Context, pos events.Position) {
	if rec, ok := ctx.Value(recorderKey{}).(*recorder); ok {
		rec.record(pos)
	}
}

// RecordingLog wraps the event log so that every append inside a Send becomes part of its token.
type RecordingLog struct{ events.Log }

// Append implements events.Log.
func (l RecordingLog) Append(ctx context.Context, appends ...events.Append) (events.Position, error) {
	pos, err := l.Log.Append(ctx, appends...)
	if err == nil {
		Observe(ctx, pos)
	}
	return pos, err
}
