package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Config is what every benchmark may read; main fills it from flags.
type Config struct {
	// AdminURL is a postgres:// URL of a database on the server that may create and drop databases.
	AdminURL string
	// Binary is the built server, run as `migrate up` and `serve`.
	Binary   string
	Duration time.Duration
	Warmup   time.Duration
	Clients  int
	Events   int
	// CatchUpTimeout bounds how long projection-catch-up waits for the server to finish, and how long
	// the chat benchmarks wait for a projection to apply what they wrote to the log.
	CatchUpTimeout time.Duration
	// LongChatMessages is how many messages send-long-chat sends into its long chat before measuring.
	LongChatMessages int
	// FanoutMembers, FanoutMessages and FanoutInterval shape the fanout benchmark.
	FanoutMembers  int
	FanoutMessages int
	FanoutInterval time.Duration
	// HistoryMessages is the size of the history benchmark's chat; HistoryRequests its measured pages.
	HistoryMessages int
	HistoryRequests int
	// IdleSockets is how many sockets idle-sockets opens, IdleSocketsPerUser of them per user.
	IdleSockets        int
	IdleSocketsPerUser int
	// PaymentsTimeout bounds how long the payments benchmark waits, after its load, for every accepted
	// payment to be decided.
	PaymentsTimeout time.Duration
	// Log receives progress lines (stderr), never the report.
	Log io.Writer
}

// Env is one benchmark's world: a fresh migrated database of its own and the servers started on it.
// Close stops the servers and drops the database.
type Env struct {
	Config
	// Secret is the TAKI_SECRET given to every child process.
	Secret string
	// DatabaseName and DatabaseURL name the benchmark's database.
	DatabaseName string
	DatabaseURL  string

	servers []*Server
}

// CheckBinary fails with a clear message when the server binary is missing, before anything is created.
func CheckBinary(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("server binary %s not found: build it first (`make build`, or run the harness with `make bench`, which builds it)", path)
	}
	if err != nil {
		return fmt.Errorf("server binary %s: %w", path, err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("server binary %s is not an executable file", path)
	}
	return nil
}

// NewEnv creates and migrates a database named taki_bench_<random>. If migrating fails, the database
// is dropped again before the error is returned.
func NewEnv(ctx context.Context, cfg Config) (*Env, error) {
	if err := CheckBinary(cfg.Binary); err != nil {
		return nil, err
	}
	secret := randomHex(24)
	name := "taki_bench_" + randomHex(8)
	dbURL, err := databaseURL(cfg.AdminURL, name)
	if err != nil {
		return nil, err
	}
	if err := createDatabase(ctx, cfg.AdminURL, name); err != nil {
		return nil, err
	}
	e := &Env{Config: cfg, Secret: secret, DatabaseName: name, DatabaseURL: dbURL}
	fmt.Fprintf(cfg.Log, "bench: created database %s\n", name)
	if err := e.migrate(ctx); err != nil {
		return nil, errors.Join(err, e.Close())
	}
	return e, nil
}

// Close stops every server this Env started and drops its database. It uses its own bounded context:
// it runs after Ctrl-C too, when the benchmark's context is already cancelled.
func (e *Env) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	for _, s := range e.servers {
		if err := s.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	e.servers = nil
	if err := dropDatabase(ctx, e.AdminURL, e.DatabaseName); err != nil {
		errs = append(errs, err)
	} else {
		fmt.Fprintf(e.Log, "bench: dropped database %s\n", e.DatabaseName)
	}
	return errors.Join(errs...)
}

// ChildEnv is the environment of a server child process: the harness's own environment (so that
// TAKI_* tuning knobs set by whoever runs the harness reach the server) with the settings the harness
// owns overriding it.
func (e *Env) ChildEnv(extra ...string) []string {
	own := append([]string{
		"TAKI_DATABASE_URL=" + e.DatabaseURL,
		"TAKI_SECRET=" + e.Secret,
	}, extra...)
	overridden := map[string]bool{}
	for _, kv := range own {
		k, _, _ := strings.Cut(kv, "=")
		overridden[k] = true
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !overridden[k] {
			env = append(env, kv)
		}
	}
	return append(env, own...)
}

// Connect opens one connection to the benchmark's database.
func (e *Env) Connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, e.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", e.DatabaseName, err)
	}
	return conn, nil
}

// migrate runs `taki migrate up`: the benchmark measures the schema the binary ships, not a copy.
func (e *Env) migrate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.Binary, "migrate", "up")
	cmd.Env = e.ChildEnv("TAKI_LOG_LEVEL=warn")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s migrate up: %w\n%s", e.Binary, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// databaseURL is adminURL with its database replaced by name.
func databaseURL(adminURL, name string) (string, error) {
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", fmt.Errorf("admin URL: %w", err)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return "", fmt.Errorf("admin URL must be a postgres:// URL, got scheme %q", u.Scheme)
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String(), nil
}

func createDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to admin database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// dropDatabase drops name, disconnecting whatever still uses it (a server that did not stop in time).
func dropDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to admin database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// randomHex returns 2n hex digits; crypto/rand.Read never fails (it aborts the process instead).
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
