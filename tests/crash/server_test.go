package crash

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"taki/infra/logging/logtest"
)

// secret is the child's TAKI_SECRET (at least 32 bytes).
const secret = "taki-crash-test-secret-0123456789-abcdefghij"

// buildTaki builds the real binary once per test into a temporary directory. No -race: the child is
// the system under test, not the test, and the race detector would only slow it down.
func buildTaki(t *testing.T) string {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	bin := filepath.Join(t.TempDir(), "taki")
	build := exec.Command("go", "build", "-o", bin, "./cmd/taki")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/taki: %v\n%s", err, out)
	}
	return bin
}

// childEnv is the environment of every taki child: the parent's minus any TAKI_* setting (a developer's
// own configuration must not leak into the test), plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TAKI_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// takiServer runs `taki serve` as a child process on the test database, one life after another: start,
// SIGKILL, start again. Load goroutines ask it for the current address and wait until it is up.
type takiServer struct {
	t    *testing.T
	bin  string
	logs logtest.Buffer // output of every life, for failure diagnostics

	mu     sync.Mutex
	base   string
	up     chan struct{} // closed once the current life answers /readyz; replaced when it is killed
	cmd    *exec.Cmd
	exited chan struct{} // closed when the current life's process has been reaped
	waited error
	lives  int
}

func newTakiServer(t *testing.T, bin string) *takiServer {
	s := &takiServer{t: t, bin: bin, up: make(chan struct{})}
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("taki serve output (tail):\n%s", tail(s.logs.String(), 64<<10))
		}
	})
	return s
}

// current returns the address of the current life and a channel closed while it is ready.
func (s *takiServer) current() (string, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.base, s.up
}

// start begins a new life on a fresh loopback port and returns once /readyz answers 200.
func (s *takiServer) start() {
	s.t.Helper()
	addr := freeAddr(s.t)
	s.lives++
	fmt.Fprintf(&s.logs, "--- life %d on %s ---\n", s.lives, addr)
	cmd := exec.Command(s.bin, "serve")
	cmd.Env = childEnv(
		"TAKI_DATABASE_URL="+dbURL,
		"TAKI_HTTP_ADDR="+addr,
		"TAKI_SECRET="+secret,
		"TAKI_LOG_LEVEL=warn",
		"TAKI_PAYMENTS_PROVIDER=sandbox",
	)
	cmd.Stdout, cmd.Stderr = &s.logs, &s.logs
	// Pdeathsig: should the test binary itself die, the child goes with it rather than lingering.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start taki serve: %v", err)
	}
	exited := make(chan struct{})
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	go func() {
		err := cmd.Wait()
		s.mu.Lock()
		s.waited = err
		s.mu.Unlock()
		close(exited)
	}()

	base := "http://" + addr
	if err := waitReady(base, exited); err != nil {
		s.t.Fatalf("life %d: %v", s.lives, err)
	}
	s.mu.Lock()
	s.base = base
	close(s.up)
	s.mu.Unlock()
}

// kill ends the current life with SIGKILL (no shutdown hook runs) and waits until the process is gone.
// Load goroutines wait for the next life from the moment it is called.
func (s *takiServer) kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	select {
	case <-s.up:
		s.up = make(chan struct{})
	default:
	}
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// waitReady polls /readyz until it answers 200, the process exits, or 30 s pass.
func waitReady(base string, exited <-chan struct{}) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	last := "no answer yet"
	for {
		resp, err := client.Get(base + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body))
		} else {
			last = err.Error()
		}
		select {
		case <-exited:
			return fmt.Errorf("taki serve exited before it was ready (last /readyz: %s)", last)
		case <-deadline.C:
			return fmt.Errorf("taki serve not ready after 30s (last /readyz: %s)", last)
		case <-tick.C:
		}
	}
}

// freeAddr returns a loopback address with a port nobody listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// runTaki runs a one-shot taki command (not serve) on the test database.
func runTaki(ctx context.Context, bin string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv("TAKI_DATABASE_URL="+dbURL, "TAKI_SECRET="+secret, "TAKI_LOG_LEVEL=warn")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// tail is the end of s, at most n bytes.
func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
