package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// commandThroughput compares PATCH /api/v1/users/me over HTTP (session cookie, CSRF, the bus, an
// aggregate load and an event append per request) with the cheapest durable write the same database
// can do: one autocommitted single-row INSERT of an event-sized row per round trip. Both run at the
// same concurrency; the ratio is what the whole command path costs over that floor.
func commandThroughput() Benchmark {
	return Benchmark{Name: "command-throughput", Run: runCommandThroughput}
}

func runCommandThroughput(ctx context.Context, env *Env) (Result, error) {
	// Baseline first, while no server is running, so that it gets the machine to itself.
	phase, base, err := commitBaseline(ctx, env)
	if err != nil {
		return Result{}, err
	}

	srv, err := env.StartServer(ctx)
	if err != nil {
		return Result{}, err
	}
	if _, err := srv.WaitReady(ctx); err != nil {
		return Result{}, err
	}
	client := newHTTPClient(env.Clients)
	defer client.CloseIdleConnections()

	fmt.Fprintf(env.Log, "bench: registering and logging in %d users\n", env.Clients)
	sessions, err := logInUsers(ctx, client, srv.BaseURL, env.Clients)
	if err != nil {
		return Result{}, err
	}

	fmt.Fprintf(env.Log, "bench: PATCH /api/v1/users/me from %d clients for %s\n", env.Clients, env.Duration)
	patched := make([]int, env.Clients) // every 200, warm-up included, per client
	cpuBefore, err := srv.CPUTime()
	if err != nil {
		return Result{}, err
	}
	phase.ServerPID = srv.PID()
	taki, err := phase.Run(ctx, func(ctx context.Context, w, i int) error {
		if err := sessions[w].patchProfile(ctx, client, srv.BaseURL, i); err != nil {
			return err
		}
		patched[w]++
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	cpuAfter, err := srv.CPUTime()
	if err != nil {
		return Result{}, err
	}
	acked, err := checkProfileEvents(ctx, env, patched)
	if err != nil {
		return Result{}, err
	}

	return Result{Figures: againstCommits(taki, base, "req/s", "server CPU per request",
		ms(cpuAfter-cpuBefore)/float64(max(acked, 1)))}, nil
}

// againstCommits is a load phase's figures beside the raw INSERT commits baseline: throughput (target
// 0.6x, DESIGN.md), p50 and p99 latency, and the server's CPU per operation over the whole phase
// (warm-up included) and every operation answered in it.
func againstCommits(taki, base LoadStats, unit, cpuName string, cpuPerOp float64) []Figure {
	return append([]Figure{
		{
			Name:     "throughput",
			Measured: Measure{taki.Rate(), unit},
			Baseline: &Measure{base.Rate(), "commits/s"},
			Target:   Target{Kind: RatioAtLeast, Value: 0.6},
		},
		{
			Name:     "p50 latency",
			Measured: Measure{ms(taki.Latencies.Percentile(0.50)), "ms"},
			Baseline: &Measure{ms(base.Latencies.Percentile(0.50)), "ms"},
		},
		{
			Name:     "p99 latency",
			Measured: Measure{ms(taki.Latencies.Percentile(0.99)), "ms"},
			Baseline: &Measure{ms(base.Latencies.Percentile(0.99)), "ms"},
		},
		{Name: cpuName, Measured: Measure{cpuPerOp, "ms"}},
	}, cpuFigures(taki, base)...)
}

// cpuFigures split the CPU time per operation over the measured windows by party, beside the
// baseline's. With every core busy in both (cores busy), the throughput ratio is about the inverse of
// the total's ratio: these figures say where the difference goes. None when the CPU could not be read.
func cpuFigures(taki, base LoadStats) []Figure {
	if taki.CPUErr != nil || base.CPUErr != nil || taki.Ops == 0 || base.Ops == 0 {
		return nil
	}
	perOp := func(d time.Duration, ops int) Measure { return Measure{ms(d) / float64(ops), "ms"} }
	both := func(name string, t, b time.Duration) Figure {
		bm := perOp(b, base.Ops)
		return Figure{Name: name, Measured: perOp(t, taki.Ops), Baseline: &bm}
	}
	busy := func(s LoadStats) Measure { return Measure{s.CPU.Total().Seconds() / s.Window.Seconds(), "cores"} }
	baseBusy := busy(base)
	return []Figure{
		both("CPU per op: client", taki.CPU.Client, base.CPU.Client),
		{Name: "CPU per op: server", Measured: perOp(taki.CPU.Server, taki.Ops)},
		both("CPU per op: PostgreSQL", taki.CPU.Postgres, base.CPU.Postgres),
		both("CPU per op: total", taki.CPU.Total(), base.CPU.Total()),
		{Name: "cores busy", Measured: busy(taki), Baseline: &baseBusy},
	}
}

// commitBaseline measures insertBaseline with the harness's clients, warm-up and duration, and returns
// that load phase for the measured side to run alike.
func commitBaseline(ctx context.Context, env *Env) (LoadPhase, LoadStats, error) {
	phase := LoadPhase{Workers: env.Clients, Warmup: env.Warmup, Duration: env.Duration, OpTimeout: 30 * time.Second}
	fmt.Fprintf(env.Log, "bench: baseline: single-row INSERT commits on %d connections for %s\n", env.Clients, env.Duration)
	base, err := insertBaseline(ctx, env, phase)
	if err != nil {
		return phase, base, fmt.Errorf("baseline: %w", err)
	}
	return phase, base, nil
}

// insertBaseline runs phase with one pgx connection per worker, each inserting event-like rows into a
// stream of its own in autocommit mode: one round trip and one WAL flush per row, like a command that
// appends one event, without anything else a command does.
func insertBaseline(ctx context.Context, env *Env, phase LoadPhase) (LoadStats, error) {
	admin, err := env.Connect(ctx)
	if err != nil {
		return LoadStats{}, err
	}
	defer admin.Close(context.WithoutCancel(ctx))
	if _, err := admin.Exec(ctx, `CREATE TABLE bench_baseline (
		id          bigserial   PRIMARY KEY,
		event_id    uuid        NOT NULL,
		stream_id   uuid        NOT NULL,
		version     bigint      NOT NULL,
		event_type  text        NOT NULL,
		occurred_at timestamptz NOT NULL,
		payload     json        NOT NULL,
		metadata    json        NOT NULL,
		UNIQUE (stream_id, version)
	)`); err != nil {
		return LoadStats{}, fmt.Errorf("create baseline table: %w", err)
	}

	conns := make([]*pgx.Conn, phase.Workers)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.WithoutCancel(ctx))
			}
		}
	}()
	streams := make([]uuid.UUID, phase.Workers)
	for w := range conns {
		if conns[w], err = env.Connect(ctx); err != nil {
			return LoadStats{}, err
		}
		streams[w] = uuid.New()
	}
	const insert = `INSERT INTO bench_baseline (event_id, stream_id, version, event_type, occurred_at, payload, metadata)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`
	return phase.Run(ctx, func(ctx context.Context, w, i int) error {
		id, err := uuid.NewV7()
		if err != nil {
			return err
		}
		payload, metadata := baselineRow(streams[w], i)
		_, err = conns[w].Exec(ctx, insert, id, streams[w], int64(i+1), "user.profile_updated",
			time.Now().UTC(), payload, metadata)
		return err
	})
}

// baselineRow returns a payload (~150 bytes) and metadata shaped like those of a profile update.
func baselineRow(stream uuid.UUID, i int) (payload, metadata string) {
	payload = `{"user_id":"` + stream.String() + `","display_name":"name-` + strconv.Itoa(i) +
		`","avatar_url":"https://avatars.example.com/` + stream.String() + `.png"}`
	metadata = `{"correlation_id":"` + stream.String() + `","user_id":"` + stream.String() + `"}`
	return payload, metadata
}

// session is one logged-in benchmark client. Each is used by one worker only, so it needs no lock.
type session struct {
	cookie *http.Cookie
	csrf   string
}

const sessionCookie = "taki_session"

// logInUsers registers n users and logs each in. Two at a time: registration and login each run an
// argon2id hash, which is CPU-bound, so more parallelism than cores would only queue.
func logInUsers(ctx context.Context, client *http.Client, baseURL string, n int) ([]*session, error) {
	run := randomHex(4)
	out := make([]*session, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i], errs[i] = registerAndLogIn(ctx, client, baseURL,
				fmt.Sprintf("bench-%s-%d@example.com", run, i), fmt.Sprintf("bench-password-%d", i), fmt.Sprintf("Bench User %d", i))
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

func registerAndLogIn(ctx context.Context, client *http.Client, baseURL, email, password, name string) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	const usersPath = "/api/v1/users"
	r, err := doJSON(ctx, client, http.MethodPost, baseURL+usersPath,
		mustJSON(map[string]string{"email": email, "password": password, "display_name": name}), nil)
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", usersPath, err)
	}
	if r.Status != http.StatusCreated {
		return nil, unexpected(http.MethodPost, usersPath, r)
	}
	return logIn(ctx, client, baseURL, email, password)
}

// takeCookie keeps the session cookie if the answer set a new one (a server may re-issue it).
func (s *session) takeCookie(cookies []*http.Cookie) {
	for _, c := range cookies {
		if c.Name == sessionCookie && c.Value != "" {
			s.cookie = &http.Cookie{Name: c.Name, Value: c.Value}
		}
	}
}

// patchProfile changes the display name to one that differs from the previous request's, so that
// every request decides a real change and appends an event.
func (s *session) patchProfile(ctx context.Context, client *http.Client, baseURL string, i int) error {
	const path = "/api/v1/users/me"
	h := http.Header{}
	h.Set("X-CSRF-Token", s.csrf)
	h.Set("Cookie", s.cookie.String())
	r, err := doJSON(ctx, client, http.MethodPatch, baseURL+path, []byte(`{"display_name":"name-`+strconv.Itoa(i)+`"}`), h)
	if err != nil {
		return fmt.Errorf("PATCH %s: %w", path, err)
	}
	if r.Status != http.StatusOK {
		return unexpected(http.MethodPatch, path, r)
	}
	s.takeCookie(r.Cookies)
	return nil
}

// checkProfileEvents verifies that every acknowledged PATCH appended exactly one event: a fast command
// path that loses or doubles writes would make the throughput figure meaningless.
// It returns the number of acknowledged requests.
func checkProfileEvents(ctx context.Context, env *Env, patched []int) (int, error) {
	acked := 0
	for _, n := range patched {
		acked += n
	}
	conn, err := env.Connect(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var logged int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM events WHERE event_type = 'user.profile_updated'`).Scan(&logged); err != nil {
		return 0, fmt.Errorf("count profile events: %w", err)
	}
	if logged != acked {
		return 0, fmt.Errorf("%d PATCH requests answered 200 but the log holds %d user.profile_updated events", acked, logged)
	}
	fmt.Fprintf(env.Log, "bench: %d acknowledged PATCH requests, %d user.profile_updated events in the log\n", acked, logged)
	return acked, nil
}
