package server

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"taki/events"
	"taki/handlers"
	"taki/infra/bus"
	"taki/infra/postgres"
	"taki/infra/ws"
)

// TypingChannel is the NOTIFY channel typing notices travel on between instances.
const TypingChannel = "taki_typing"

// recoveryChats bounds the chat states one ?since= recovery keeps while it replays the log.
const recoveryChats = 1000

// realtime is one instance's real-time delivery (DESIGN.md, "Real time"): a tail of the event log
// feeding the WebSocket fan-out in log order, recovery of reconnecting sockets from the log, the chat
// client frames, and typing notices relayed through NOTIFY. Instances share nothing but PostgreSQL.
//
// Wiring, in wire's order: newRealtime once the event store, notifier, projector and chats read model
// exist; realtimeHubConfig for ws.NewHub; Typing() for the chat commands; attach(hub) once the hub
// exists; run from Start (realtimeStarted waits for the tail before the server serves).
type realtime struct {
	logger      *slog.Logger
	databaseURL string
	pool        *pgxpool.Pool
	store       *postgres.EventStore
	feed        *handlers.Feed
	tail        *postgres.Tail
	typing      *ws.TypingRelay
	hub         atomic.Pointer[ws.Hub]
	fanout      *ws.Fanout
	// aggregates is this instance's write-model cache: the tail tells it of every event, so that
	// states other instances moved on are dropped within milliseconds.
	aggregates *handlers.Store
}

// newRealtime builds the live feed, the log tail and the typing relay. chats is the chats read model
// (projections.Chats) and projector the waiter for it.
func newRealtime(databaseURL string, logger *slog.Logger, pool *pgxpool.Pool, store *postgres.EventStore,
	notifier *postgres.Notifier, projector handlers.ReadModelWaiter, chats handlers.ChatViews, aggregates *handlers.Store) (*realtime, error) {
	if aggregates == nil {
		return nil, errors.New("realtime: nil aggregate store")
	}
	r := &realtime{logger: logger, databaseURL: databaseURL, pool: pool, store: store, aggregates: aggregates}
	feed, err := handlers.NewFeed(handlers.FeedConfig{Log: store, Chats: chats, Waiter: projector,
		Present: func(id uuid.UUID) bool {
			h := r.hub.Load()
			return h != nil && h.Connected(id)
		}})
	if err != nil {
		return nil, err
	}
	tail, err := postgres.NewTail(store, notifier, postgres.TailConfig{Logger: logger,
		Unreadable: func(ctx context.Context, env events.Envelope, err error) {
			r.aggregates.Forget(env.StreamID, env.Version)
			r.fanout.Unreadable(ctx, env, err)
		}})
	if err != nil {
		return nil, err
	}
	typing, err := ws.NewTypingRelay(ws.TypingRelayConfig{
		Publish: func(ctx context.Context, payload string) error {
			_, err := pool.Exec(ctx, `SELECT pg_notify($1, $2)`, TypingChannel, payload)
			return err
		},
		Members: feed.Members,
		Logger:  logger,
	})
	if err != nil {
		return nil, err
	}
	r.feed, r.tail, r.typing = feed, tail, typing
	return r, nil
}

// Typing is the typing relay the chat commands need (handlers.NewChatCommands).
func (r *realtime) Typing() handlers.TypingRelay { return r.typing }

// realtimeHubConfig returns cfg with the chat client frames (sent through b) and ?since= recovery,
// then edited by edit if it is not nil.
func (r *realtime) realtimeHubConfig(cfg ws.Config, b *bus.Bus, edit func(*ws.Config)) ws.Config {
	frames := ws.ChatFrameHandlers(b)
	if cfg.Handlers != nil {
		maps.Copy(frames, cfg.Handlers)
	}
	cfg.Handlers = frames
	cfg.Recovery = &ws.RecoveryConfig{
		Log:      r.store,
		UserFeed: func(id uuid.UUID) ws.Feed { return r.feed.ForUser(id, recoveryChats) },
		Live:     r.tail.Started(),
	}
	if edit != nil {
		edit(&cfg)
	}
	return cfg
}

// attach connects the fan-out and the typing relay to hub; metrics go to reg.
func (r *realtime) attach(hub *ws.Hub, reg prometheus.Registerer) error {
	fanout, err := ws.NewFanout(hub, r.feed, r.logger, reg)
	if err != nil {
		return err
	}
	r.fanout = fanout
	r.hub.Store(hub)
	r.typing.Attach(hub)
	return nil
}

// run tails the log into the fan-out and listens for other instances' typing notices until ctx ends.
func (r *realtime) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		postgres.Listen(ctx, r.databaseURL, TypingChannel, postgres.Listener{
			Notified: func(payload string) { r.typing.Received(ctx, payload) },
		}, r.logger)
	}()
	deliver := func(ctx context.Context, batch []events.Envelope) error {
		for _, env := range batch {
			r.aggregates.Forget(env.StreamID, env.Version)
		}
		return r.fanout.Deliver(ctx, batch)
	}
	if err := r.tail.Run(ctx, deliver); err != nil && ctx.Err() == nil {
		r.logger.ErrorContext(ctx, "websocket fan-out stopped", slog.String("err", err.Error()))
	}
	wg.Wait()
}

// realtimeStarted waits until the tail has its start position (or ctx ends), then answers as Start
// does: a socket opened once the server serves gets every event committed after it opened.
func (r *realtime) realtimeStarted(ctx context.Context, wait func()) (func(), error) {
	select {
	case <-r.tail.Started():
		return wait, nil
	case <-ctx.Done():
		wait()
		return nil, ctx.Err()
	}
}
