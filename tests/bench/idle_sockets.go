package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// idleSockets measures DESIGN.md's "<= 20 KiB per idle WebSocket at 10,000 sockets": the growth of
// the server process's resident memory (VmRSS) from before to after opening env.IdleSockets sockets
// that then stay idle, per socket. The bar is absolute. Beside it, for scale, the same measurement of
// the plainest server that can hold the sockets: gorilla/websocket's upgrader on net/http, one
// goroutine per socket reading it, in a child process of the harness with taki serve's GC setting.
func idleSockets() Benchmark {
	return Benchmark{Name: "idle-sockets", Run: runIdleSockets}
}

const (
	// idleSettle is how long the sockets stay idle before the memory is read.
	idleSettle = 3 * time.Second
	// dialParallel is how many handshakes run at once.
	dialParallel = 32
	// echoServerEnv makes the harness's binary run as the baseline server (see main).
	echoServerEnv = "TAKI_BENCH_ECHO_SERVER"
)

func runIdleSockets(ctx context.Context, env *Env) (Result, error) {
	if err := raiseFileLimit(env.IdleSockets + 1000); err != nil {
		return Result{}, err
	}

	// Baseline first: the plain gorilla server, before taki serve starts.
	fmt.Fprintf(env.Log, "bench: baseline: %d idle sockets on a plain gorilla/websocket server\n", env.IdleSockets)
	echo, err := startEchoServer(env)
	if err != nil {
		return Result{}, err
	}
	baseBefore, baseAfter, err := measureSockets(ctx, env, env.IdleSockets, idleSettle, rssSampler(echo.pid), func(ctx context.Context, i int) (*websocket.Conn, error) {
		c, _, err := wsDialer.DialContext(ctx, "ws://"+echo.addr+"/", nil)
		return c, err
	})
	if stopErr := echo.stop(); err == nil {
		err = stopErr
	}
	if err != nil {
		return Result{}, fmt.Errorf("baseline: %w", err)
	}

	perUser := env.IdleSocketsPerUser
	nUsers := (env.IdleSockets + perUser - 1) / perUser
	srv, _, sessions, client, err := seedAndStart(ctx, env, nUsers)
	if err != nil {
		return Result{}, err
	}
	defer client.CloseIdleConnections()
	begin := time.Now()
	tokens := make([]string, nUsers)
	if err := forEach(ctx, nUsers, loginParallel, func(ctx context.Context, i int) error {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var err error
		tokens[i], err = sessions[i].wsToken(ctx, client, srv.BaseURL)
		return err
	}); err != nil {
		return Result{}, err
	}
	client.CloseIdleConnections()
	fmt.Fprintf(env.Log, "bench: %d WebSocket tokens in %s\n", nUsers, time.Since(begin).Round(time.Millisecond))

	fmt.Fprintf(env.Log, "bench: %d idle sockets on taki serve (%d per user)\n", env.IdleSockets, perUser)
	before, after, err := measureSockets(ctx, env, env.IdleSockets, idleSettle, serverSampler(srv, client), func(ctx context.Context, i int) (*websocket.Conn, error) {
		return dialWS(ctx, srv.BaseURL, tokens[i/perUser])
	})
	if err != nil {
		return Result{}, err
	}

	n := float64(env.IdleSockets)
	perSocket := func(a, b float64) float64 { return (b - a) / n }
	return Result{Figures: []Figure{
		{
			Name:     "RSS per idle socket at " + strconv.Itoa(env.IdleSockets),
			Measured: Measure{perSocket(float64(before.RSS), float64(after.RSS)), "KiB"},
			Baseline: &Measure{perSocket(float64(baseBefore.RSS), float64(baseAfter.RSS)), "KiB"},
			Target:   Target{Kind: ValueAtMost, Value: 20},
		},
		{
			Name:     "server RSS before the sockets",
			Measured: Measure{float64(before.RSS) / 1024, "MiB"},
			Baseline: &Measure{float64(baseBefore.RSS) / 1024, "MiB"},
		},
		{
			Name:     "server RSS with the sockets",
			Measured: Measure{float64(after.RSS) / 1024, "MiB"},
			Baseline: &Measure{float64(baseAfter.RSS) / 1024, "MiB"},
		},
		// Where the memory goes, from the server's own runtime metrics (no baseline: the plain
		// server exports none). Heap in use counts garbage not collected yet, too; with few sockets a
		// collection between the two samples can even make it negative.
		{Name: "Go heap in use per socket", Measured: Measure{perSocket(before.HeapInuse, after.HeapInuse) / 1024, "KiB"}},
		{Name: "goroutine stacks per socket", Measured: Measure{perSocket(before.StackInuse, after.StackInuse) / 1024, "KiB"}},
		{Name: "goroutines per socket", Measured: Measure{perSocket(before.Goroutines, after.Goroutines), "goroutines"}},
	}}, nil
}

// measureSockets reads pid's VmRSS, opens n sockets with dial (dialParallel at a time), keeps reading
// them (which answers the server's pings) while they stay idle for settle, reads VmRSS again and
// closes them all. A socket that ends before the harness closes it is an error. RSS is in KiB.
func measureSockets(ctx context.Context, env *Env, n int, settle time.Duration, sample func(context.Context) (memSample, error),
	dial func(ctx context.Context, i int) (*websocket.Conn, error)) (before, after memSample, err error) {
	before, err = sample(ctx)
	if err != nil {
		return before, after, err
	}
	conns := make([]*websocket.Conn, n)
	var closing atomic.Bool
	var readers sync.WaitGroup
	var ended atomic.Int64
	var firstEnd atomic.Value
	defer func() {
		closing.Store(true)
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
		readers.Wait()
	}()
	begin := time.Now()
	err = forEach(ctx, n, dialParallel, func(ctx context.Context, i int) error {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c, err := dial(ctx, i)
		if err != nil {
			return err
		}
		conns[i] = c
		readers.Go(func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					if !closing.Load() {
						ended.Add(1)
						firstEnd.CompareAndSwap(nil, fmt.Sprintf("socket %d: %v", i, err))
					}
					return
				}
			}
		})
		return nil
	})
	if err != nil {
		return before, after, fmt.Errorf("open sockets: %w", err)
	}
	fmt.Fprintf(env.Log, "bench: opened %d sockets in %s; idle for %s\n", n, time.Since(begin).Round(time.Millisecond), settle)
	select {
	case <-ctx.Done():
		return before, after, ctx.Err()
	case <-time.After(settle):
	}
	after, err = sample(ctx)
	if err != nil {
		return before, after, err
	}
	if k := ended.Load(); k > 0 {
		return before, after, fmt.Errorf("%d of %d idle sockets ended before the harness closed them; first: %v", k, n, firstEnd.Load())
	}
	fmt.Fprintf(env.Log, "bench: RSS %d KiB before, %d KiB with %d sockets\n", before.RSS, after.RSS, n)
	return before, after, nil
}

// memSample is a server's memory at one moment: its RSS in KiB and, for taki serve, the Go runtime's
// own figures from GET /metrics (zero for the baseline server, which has none).
type memSample struct {
	RSS        int64
	Goroutines float64
	// HeapInuse and StackInuse are bytes (go_memstats_heap_inuse_bytes, go_memstats_stack_inuse_bytes).
	HeapInuse  float64
	StackInuse float64
}

// rssSampler samples pid's RSS only.
func rssSampler(pid int) func(context.Context) (memSample, error) {
	return func(context.Context) (memSample, error) {
		rss, err := readRSS(pid)
		return memSample{RSS: rss}, err
	}
}

// serverSampler samples taki serve's RSS and its runtime's metrics.
func serverSampler(srv *Server, client *http.Client) func(context.Context) (memSample, error) {
	return func(ctx context.Context) (memSample, error) {
		rss, err := readRSS(srv.cmd.Process.Pid)
		if err != nil {
			return memSample{}, err
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		r, err := doJSON(ctx, client, http.MethodGet, srv.BaseURL+"/metrics", nil, nil)
		if err != nil {
			return memSample{}, fmt.Errorf("GET /metrics: %w", err)
		}
		if r.Status != http.StatusOK {
			return memSample{}, unexpected(http.MethodGet, "/metrics", r)
		}
		m := promValues(string(r.Body), "go_goroutines", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes")
		return memSample{RSS: rss, Goroutines: m["go_goroutines"], HeapInuse: m["go_memstats_heap_inuse_bytes"],
			StackInuse: m["go_memstats_stack_inuse_bytes"]}, nil
	}
}

// promValues picks the values of unlabelled samples by name from a Prometheus text exposition.
func promValues(text string, names ...string) map[string]float64 {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !want[f[0]] {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			out[f[0]] = v
		}
	}
	return out
}

// readRSS is a process's resident set size in KiB, from /proc/PID/status.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read RSS: %w", err)
	}
	return parseVmRSS(string(b))
}

// parseVmRSS finds the "VmRSS:  1234 kB" line of a /proc status file.
func parseVmRSS(status string) (int64, error) {
	for line := range strings.SplitSeq(status, "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("read RSS: malformed line %q", line)
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, errors.New("read RSS: no VmRSS line")
}

// raiseFileLimit lifts this process's soft RLIMIT_NOFILE to its hard limit, which children started
// afterwards (the server) inherit: since Go 1.21 an explicit Setrlimit also stops os/exec from
// restoring the original soft limit in children. It fails when the hard limit is below need.
func raiseFileLimit(need int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	if lim.Max < uint64(need) {
		return fmt.Errorf("RLIMIT_NOFILE hard limit is %d; %d sockets need about %d descriptors in the harness and as many in the server: raise it (ulimit -Hn) or lower -idle-sockets", lim.Max, need-1000, need)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
	}
	return nil
}

// echoProcess is the baseline server, a child process running this binary with echoServerEnv set.
type echoProcess struct {
	cmd  *exec.Cmd
	pid  int
	addr string
	done chan struct{}
}

func startEchoServer(env *Env) (*echoProcess, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("start echo server: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), echoServerEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start echo server: %w", err)
	}
	cmd.Stderr = env.Log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start echo server: %w", err)
	}
	p := &echoProcess{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = p.stop()
		return nil, fmt.Errorf("echo server did not say its address: %w", err)
	}
	p.addr = strings.TrimSpace(line)
	return p, nil
}

// stop ends the child (SIGTERM, then SIGKILL after 10 s) and waits for it.
func (p *echoProcess) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return errors.New("echo server did not stop within 10 s of SIGTERM; killed")
	}
}

// runEchoServer is the baseline server's main: a gorilla/websocket upgrader on net/http on a loopback
// port that it prints on stdout, with a goroutine per socket reading (and echoing) frames, until
// SIGTERM. Its GC setting is taki serve's (GOGC 400 unless GOGC is set).
func runEchoServer(stdout io.Writer) int {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo server:", err)
		return 1
	}
	up := &websocket.Upgrader{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			for {
				t, b, err := c.ReadMessage()
				if err != nil {
					return
				}
				if err := c.WriteMessage(t, b); err != nil {
					return
				}
			}
		}()
	}), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintln(stdout, ln.Addr().String())
	go func() { _ = srv.Serve(ln) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	return 0
}
