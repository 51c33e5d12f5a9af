// Package server wires Taki's adapters into one running service: pool, event store, bus with every
// handler, projections, sessions and the HTTP router. cmd/taki and the end-to-end tests both build it.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"taki/commands"
	"taki/events"
	"taki/handlers"
	"taki/infra/auth"
	"taki/infra/bus"
	"taki/infra/config"
	httpapi "taki/infra/http"
	"taki/infra/postgres"
	"taki/infra/ws"
	"taki/projections"
)

// aggregateCacheSize bounds the write model's cache of recent aggregate states (a few KiB each).
const aggregateCacheSize = 20000

// Server is a wired Taki instance. Build it with New, run it with Run, release it with Close.
type Server struct {
	Config    config.Config
	Logger    *slog.Logger
	Pool      *pgxpool.Pool
	Bus       *bus.Bus
	Store     *postgres.EventStore
	Projector *postgres.Projector
	Sessions  *auth.Manager
	Router    *gin.Engine
	Registry  *prometheus.Registry
	Hub       *ws.Hub

	notifier *postgres.Notifier
	realtime *realtime
	payments *paymentsRuntime
}

// Options tune a server for tests and tools.
type Options struct {
	// PasswordConfig overrides argon2id's cost (tests use a cheap one).
	PasswordConfig auth.PasswordConfig
	// Now is the clock (default time.Now).
	Now func() time.Time
	// WebSocket, if set, edits the WebSocket hub's configuration last (tests shrink its buffers and
	// its recovery bound).
	WebSocket func(*ws.Config)
	// Payments tunes the payments provider client and the in-process sandbox.
	Payments PaymentsOptions
}

// New connects to the database (which must be migrated) and wires everything.
func New(ctx context.Context, cfg config.Config, logger *slog.Logger, opts Options) (*Server, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	gin.SetMode(gin.ReleaseMode)
	pool, err := postgres.Connect(ctx, cfg.DatabaseURL, int32(cfg.DatabaseMaxConns))
	if err != nil {
		return nil, err
	}
	s, err := wire(cfg, logger, pool, opts)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

func wire(cfg config.Config, logger *slog.Logger, pool *pgxpool.Pool, opts Options) (*Server, error) {
	registry := events.NewRegistry()
	notifier := postgres.NewNotifier(cfg.DatabaseURL, logger)
	store, err := postgres.NewEventStore(pool, registry, notifier, logger, opts.Now)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	hasher, err := auth.NewHasher(opts.PasswordConfig)
	if err != nil {
		return nil, err
	}
	sessions, err := auth.NewManager(pool, auth.SessionConfig{
		IdleTimeout: cfg.SessionIdle, AbsoluteTimeout: cfg.SessionAbsolute, CookieSecure: cfg.CookieSecure, Now: opts.Now,
		Logger: logger,
		OnLoadError: func(c *gin.Context, err error) {
			httpapi.WriteError(c, fmt.Errorf("load session: %w: %w", err,
				&commands.Error{Kind: commands.KindUnavailable, Detail: "sessions are unavailable; try again shortly", RetryAfter: time.Second}))
		},
	})
	if err != nil {
		return nil, err
	}
	throttle, err := auth.NewThrottle(pool, auth.ThrottleConfig{
		MaxFailures: cfg.LoginFailuresBeforeThrottle, Window: cfg.LoginThrottleWindow, Now: opts.Now,
	})
	if err != nil {
		return nil, err
	}
	tokens, err := auth.NewWSTokens(cfg.Secret, opts.Now, 0)
	if err != nil {
		return nil, err
	}

	usersProjection, err := projections.NewUsers(pool)
	if err != nil {
		return nil, err
	}
	chatsProjection, err := projections.NewChats(pool)
	if err != nil {
		return nil, err
	}
	paymentsProjection, err := projections.NewPayments(pool)
	if err != nil {
		return nil, err
	}
	projector, err := postgres.NewProjector(pool, registry, notifier, postgres.ProjectorConfig{
		BatchSize: cfg.ProjectionBatchSize, Logger: logger,
	}, usersProjection, chatsProjection, paymentsProjection)
	if err != nil {
		return nil, err
	}
	reg.MustRegister(postgres.NewProjectorCollector(projector))

	b := bus.New(
		bus.Logging(logger),
		bus.Metrics(reg),
		bus.Validation(),
		bus.RetryConflicts(10),
		bus.ReadYourWrites(projector, cfg.ConsistencyWait),
	)
	log := bus.CountingLog(bus.RecordingLog{Log: store}, reg)
	aggregates, err := handlers.NewStore(log, aggregateCacheSize, bus.Observe)
	if err != nil {
		return nil, err
	}
	if err := registerHandlers(b, aggregates, store, hasher, throttle, sessions, usersProjection, projector, opts.Now); err != nil {
		return nil, err
	}

	migrator, err := postgres.NewMigrator(pool)
	if err != nil {
		return nil, err
	}
	rt, err := newRealtime(cfg.DatabaseURL, logger, pool, store, notifier, projector, chatsProjection, aggregates)
	if err != nil {
		return nil, err
	}
	hub, err := ws.NewHub(rt.realtimeHubConfig(ws.Config{
		AllowedOrigins: cfg.AllowedOrigins, Tokens: tokens, Sessions: sessions, Logger: logger, Registry: reg,
		WriteError: httpapi.WriteError, BadRequest: httpapi.BadRequest,
	}, b, opts.WebSocket))
	if err != nil {
		return nil, err
	}
	if err := rt.attach(hub, reg); err != nil {
		_ = hub.Close(context.Background())
		return nil, err
	}
	// A session's end (here, or announced by another instance) closes its sockets on this instance.
	sessions.OnInvalidate(hub.SessionsChanged)
	if err := registerChats(b, aggregates, store, chatsProjection, projector, rt.Typing(), cfg.ConsistencyWait, opts.Now); err != nil {
		_ = hub.Close(context.Background())
		return nil, err
	}
	if err := registerPaymentQueries(b, paymentsProjection); err != nil {
		_ = hub.Close(context.Background())
		return nil, err
	}
	pay, err := wirePayments(cfg, logger, pool, store, notifier, b, aggregates, reg, opts.Payments, opts.Now)
	if err != nil {
		_ = hub.Close(context.Background())
		return nil, err
	}
	router, err := httpapi.NewRouter(httpapi.Deps{
		Bus: b, Sessions: sessions, WSTokens: tokens, Logger: logger, Registry: reg, Gatherer: reg, WS: hub,
		SquareWebhook: pay.webhook,
		Readiness: []httpapi.ReadinessCheck{
			{Name: "database", Check: pool.Ping},
			{Name: "migrations", Check: func(ctx context.Context) error {
				pending, err := migrator.Pending(ctx)
				if err != nil {
					return err
				}
				if pending {
					return errors.New("migrations pending: run `taki migrate up`")
				}
				return nil
			}},
			{Name: "projections", Check: func(context.Context) error { return projector.Running() }},
		},
	})
	if err != nil {
		_ = hub.Close(context.Background()) // no socket can be open yet: this only stops melody's goroutine
		pay.close()
		return nil, err
	}
	pay.setRouter(router)
	return &Server{
		Config: cfg, Logger: logger, Pool: pool, Bus: b, Store: store, Projector: projector,
		Sessions: sessions, Router: router, Registry: reg, Hub: hub, notifier: notifier, realtime: rt,
		payments: pay,
	}, nil
}

func registerHandlers(b *bus.Bus, aggregates *handlers.Store, store *postgres.EventStore, hasher handlers.PasswordHasher,
	throttle handlers.LoginThrottle, sessions handlers.SessionRevoker, users *projections.Users,
	projector *postgres.Projector, now func() time.Time) error {
	register, err := handlers.NewRegisterUserHandler(aggregates, hasher, now)
	if err != nil {
		return err
	}
	logIn, err := handlers.NewLogInHandler(aggregates, store, hasher, throttle, now)
	if err != nil {
		return err
	}
	update, err := handlers.NewUpdateProfileHandler(aggregates)
	if err != nil {
		return err
	}
	change, err := handlers.NewChangePasswordHandler(aggregates, hasher, sessions, throttle)
	if err != nil {
		return err
	}
	promote, err := handlers.NewPromoteUserHandler(aggregates, store, sessions)
	if err != nil {
		return err
	}
	userQueries, err := handlers.NewUserQueries(users)
	if err != nil {
		return err
	}
	projectionAdmin, err := postgres.NewProjectionAdmin(projector, store)
	if err != nil {
		return err
	}
	admin, err := handlers.NewAdminHandlers(projectionAdmin, store)
	if err != nil {
		return err
	}
	bus.RegisterCommand(b, register)
	bus.RegisterCommand(b, logIn)
	bus.RegisterCommand(b, update)
	bus.RegisterCommand(b, change)
	bus.RegisterCommand(b, promote)
	bus.RegisterCommand(b, handlers.ReplayProjectionHandler{AdminHandlers: admin})
	bus.RegisterQuery(b, handlers.GetProfileHandler{UserQueries: userQueries})
	bus.RegisterQuery(b, handlers.GetUserHandler{UserQueries: userQueries})
	bus.RegisterQuery(b, handlers.SearchUsersHandler{UserQueries: userQueries})
	bus.RegisterQuery(b, handlers.ListProjectionsHandler{AdminHandlers: admin})
	bus.RegisterQuery(b, handlers.VerifyProjectionHandler{AdminHandlers: admin})
	bus.RegisterQuery(b, handlers.ListEventsHandler{AdminHandlers: admin})
	return nil
}

// Start runs the background workers (event notifications, session invalidations, projections, the
// WebSocket fan-out) until ctx ends, and returns once every projection has subscribed and the fan-out
// has its start position. Wait blocks until they stopped.
func (s *Server) Start(ctx context.Context) (wait func(), err error) {
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); s.notifier.Run(ctx) }()
	go func() { defer wg.Done(); s.realtime.run(ctx) }()
	go func() { defer wg.Done(); s.Sessions.Run(ctx, s.Config.DatabaseURL) }()
	wg.Add(1)
	go func() { defer wg.Done(); s.payments.run(ctx, s.Logger) }()
	errc := make(chan error, 1)
	go func() {
		defer wg.Done()
		if err := s.Projector.Run(ctx); err != nil {
			errc <- err
		}
	}()
	select {
	case <-s.Projector.Started():
		return s.realtime.realtimeStarted(ctx, wg.Wait)
	case err := <-errc:
		wg.Wait()
		return nil, err
	case <-ctx.Done():
		wg.Wait()
		return nil, ctx.Err()
	}
}

// Serve runs the HTTP server on ln until ctx ends, then drains it (at most Config.ShutdownTimeout),
// stops the workers and returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	workers, cancelWorkers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWorkers()
	wait, err := s.Start(workers)
	if err != nil {
		return fmt.Errorf("start projections: %w", err)
	}
	srv := &http.Server{
		Handler:           s.Router,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.Logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	s.Logger.Info("serving", slog.String("addr", ln.Addr().String()))

	select {
	case err := <-served:
		s.closeHub()
		cancelWorkers()
		wait()
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), s.Config.ShutdownTimeout)
	defer cancel()
	// WebSockets first: http.Server.Shutdown neither waits for nor closes hijacked connections, and
	// their clients can reconnect elsewhere while HTTP drains (new sockets get 503 meanwhile).
	s.Logger.Info("shutting down: closing websockets")
	if err := s.Hub.Close(shutdownCtx); err != nil {
		s.Logger.Warn("websockets not closed in time", slog.String("error", err.Error()))
	}
	s.Logger.Info("shutting down: draining HTTP")
	err = srv.Shutdown(shutdownCtx)
	s.Logger.Info("shutting down: stopping subscribers")
	cancelWorkers()
	wait()
	if err != nil {
		return fmt.Errorf("drain http: %w", err)
	}
	return nil
}

// Close closes the WebSockets if Serve did not, stops the event store's committers and releases the pool.
func (s *Server) Close() {
	s.closeHub()
	s.payments.close()
	s.Store.Close()
	s.Pool.Close()
}

// closeHub closes the WebSockets (a no-op after the first time), giving them ShutdownTimeout.
func (s *Server) closeHub() {
	ctx, cancel := context.WithTimeout(context.Background(), s.Config.ShutdownTimeout)
	defer cancel()
	if err := s.Hub.Close(ctx); err != nil {
		s.Logger.Warn("websockets not closed in time", slog.String("error", err.Error()))
	}
}
