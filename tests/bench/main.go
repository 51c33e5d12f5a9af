// Command bench is Taki's benchmark harness: `go run ./tests/bench` (or `make bench`, which builds
// bin/taki first). Every figure is printed beside a baseline measured in the same run on the same
// machine, and judged by the ratio (or, where DESIGN.md says so, by an absolute bar). A figure below its
// target is reported as BELOW and does not fail the run; only errors do.
//
// Each benchmark gets a fresh database taki_bench_<random>, migrated by `bin/taki migrate up`, and
// dropped at the end, also after Ctrl-C. Load stays on loopback.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Benchmark is one entry of the registry: one file per benchmark, listed in benchmarks().
type Benchmark struct {
	Name string
	// Run measures inside env (a fresh database, torn down by the harness) and returns its figures.
	Run func(ctx context.Context, env *Env) (Result, error)
}

// benchmarks is the registry, in run order. Later issues add their entries here.
func benchmarks() []Benchmark {
	return []Benchmark{
		commandThroughput(),
		projectionCatchUp(),
		sendMessageBench(),
		sendLongChat(),
		fanout(),
		history(),
		idleSockets(),
		paymentsBench(),
		replayBench(),
	}
}

func main() {
	if os.Getenv(echoServerEnv) != "" {
		// The idle-sockets baseline: this binary, re-executed as a plain WebSocket server.
		os.Exit(runEchoServer(os.Stdout))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := Config{Log: stderr}
	only := fs.String("only", "", "run only these benchmarks (comma-separated names)")
	list := fs.Bool("list", false, "list the benchmarks and exit")
	asJSON := fs.Bool("json", false, "write the figures as JSON lines to stdout (the table then goes to stderr)")
	fs.StringVar(&cfg.AdminURL, "admin-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		"PostgreSQL URL allowed to create and drop the benchmark databases")
	fs.StringVar(&cfg.Binary, "bin", "./bin/taki", "the built server binary")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured duration of each load phase")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "uncounted warm-up before each load phase")
	fs.IntVar(&cfg.Clients, "clients", 32, "concurrent clients (HTTP) and connections (baseline)")
	fs.IntVar(&cfg.Events, "events", 200_000, "events written to the log for projection-catch-up")
	fs.DurationVar(&cfg.CatchUpTimeout, "catchup-timeout", 10*time.Minute, "give up on projection catch-up after this long")
	fs.IntVar(&cfg.LongChatMessages, "long-chat-messages", 100_000, "messages sent into the long chat of send-long-chat before measuring")
	fs.IntVar(&cfg.FanoutMembers, "fanout-members", 1000, "members of the fanout group, each with one open WebSocket")
	fs.IntVar(&cfg.FanoutMessages, "fanout-messages", 200, "messages sent one at a time into the fanout group (measured)")
	fs.DurationVar(&cfg.FanoutInterval, "fanout-interval", 100*time.Millisecond, "fanout: at most one message per this interval")
	fs.IntVar(&cfg.HistoryMessages, "history-messages", 1_000_000, "messages of the history chat")
	fs.IntVar(&cfg.HistoryRequests, "history-requests", 2000, "history: measured page requests (and as many baseline requests)")
	fs.IntVar(&cfg.IdleSockets, "idle-sockets", 10_000, "idle WebSockets opened by idle-sockets")
	fs.IntVar(&cfg.IdleSocketsPerUser, "idle-sockets-per-user", 1, "idle-sockets: sockets per user (users = sockets / this)")
	fs.DurationVar(&cfg.PaymentsTimeout, "payments-timeout", time.Minute, "payments: wait at most this long after the load for every accepted payment to complete")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	all := benchmarks()
	if *list {
		for _, b := range all {
			fmt.Fprintln(stdout, b.Name)
		}
		return 0
	}
	selected, err := selectBenchmarks(all, *only)
	if err == nil {
		err = validateConfig(cfg)
	}
	if err == nil {
		// Before any database exists: a missing binary is the commonest mistake and needs no cleanup.
		err = CheckBinary(cfg.Binary)
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}

	// Ctrl-C cancels the benchmarks; the signal stays caught until cleanup is over (stop is deferred),
	// so a second Ctrl-C cannot interrupt the dropping of databases.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var rows []Row
	failed := false
	for _, b := range selected {
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(stderr, "bench: running %s\n", b.Name)
		warnIfBusy(stderr)
		res, err := runOne(ctx, cfg, b)
		if err != nil {
			failed = true
			fmt.Fprintf(stderr, "bench: %s: ERROR: %v\n", b.Name, err)
			continue
		}
		rows = append(rows, Rows(b.Name, res)...)
	}

	table := stdout
	if *asJSON {
		table = stderr
		if err := WriteJSONLines(stdout, rows); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			failed = true
		}
	}
	if len(rows) > 0 {
		fmt.Fprintln(table)
		if err := WriteTable(table, rows); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			failed = true
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "bench: interrupted")
		return 130
	}
	if failed {
		return 1
	}
	return 0
}

// runOne runs b in an Env of its own and always tears the Env down.
func runOne(ctx context.Context, cfg Config, b Benchmark) (res Result, err error) {
	env, err := NewEnv(ctx, cfg)
	if err != nil {
		return Result{}, err
	}
	defer func() {
		if cerr := env.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("teardown: %w", cerr))
		}
	}()
	return b.Run(ctx, env)
}

// busyLoad is the 1-minute load average above which the machine is not quiet: the harness and the
// server under test already use both cores of the reference machine between them.
const busyLoad = 1.5

// warnIfBusy says so when other work competes for the machine, since every figure then says as much
// about that work as about Taki. It only warns: baseline and measurement share the noise, the ratio
// suffers less than the absolute numbers.
func warnIfBusy(w io.Writer) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return
	}
	if load, err := strconv.ParseFloat(fields[0], 64); err == nil && load > busyLoad {
		fmt.Fprintf(w, "bench: warning: load average %.2f before starting; other processes compete for the CPU and the figures will be noisy\n", load)
	}
}

func selectBenchmarks(all []Benchmark, only string) ([]Benchmark, error) {
	if strings.TrimSpace(only) == "" {
		return all, nil
	}
	var out []Benchmark
	for _, name := range strings.Split(only, ",") {
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(all, func(b Benchmark) bool { return b.Name == name })
		if i < 0 {
			names := make([]string, len(all))
			for j, b := range all {
				names[j] = b.Name
			}
			return nil, fmt.Errorf("unknown benchmark %q (have: %s)", name, strings.Join(names, ", "))
		}
		out = append(out, all[i])
	}
	return out, nil
}

func validateConfig(c Config) error {
	var errs []error
	if c.Duration <= 0 {
		errs = append(errs, errors.New("-duration must be positive"))
	}
	if c.Warmup < 0 {
		errs = append(errs, errors.New("-warmup must not be negative"))
	}
	if c.Clients < 1 || c.Clients > 1000 {
		errs = append(errs, errors.New("-clients must be between 1 and 1000"))
	}
	if c.Events < 1 || c.Events > 100_000_000 {
		errs = append(errs, errors.New("-events must be between 1 and 100000000"))
	}
	if c.CatchUpTimeout <= 0 {
		errs = append(errs, errors.New("-catchup-timeout must be positive"))
	}
	if c.LongChatMessages < 0 || c.LongChatMessages > 100_000_000 {
		errs = append(errs, errors.New("-long-chat-messages must be between 0 and 100000000"))
	}
	if c.FanoutMembers < 2 || c.FanoutMembers > 100_000 {
		errs = append(errs, errors.New("-fanout-members must be between 2 and 100000"))
	}
	if c.FanoutMessages < 1 || c.FanoutMessages > 1_000_000 {
		errs = append(errs, errors.New("-fanout-messages must be between 1 and 1000000"))
	}
	if c.FanoutInterval <= 0 {
		errs = append(errs, errors.New("-fanout-interval must be positive"))
	}
	if c.HistoryMessages < historyPage || c.HistoryMessages > 100_000_000 {
		errs = append(errs, fmt.Errorf("-history-messages must be between %d and 100000000", historyPage))
	}
	if c.HistoryRequests < 1 || c.HistoryRequests > 10_000_000 {
		errs = append(errs, errors.New("-history-requests must be between 1 and 10000000"))
	}
	if c.IdleSockets < 1 || c.IdleSockets > 1_000_000 {
		errs = append(errs, errors.New("-idle-sockets must be between 1 and 1000000"))
	}
	if c.IdleSocketsPerUser < 1 {
		errs = append(errs, errors.New("-idle-sockets-per-user must be at least 1"))
	}
	if c.PaymentsTimeout <= 0 {
		errs = append(errs, errors.New("-payments-timeout must be positive"))
	}
	return errors.Join(errs...)
}
