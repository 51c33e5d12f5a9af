package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Server is a `taki serve` child process on a loopback port of its own.
type Server struct {
	BaseURL string
	// Started is when the process was started (before exec returned), the origin of start-up timings.
	Started time.Time

	cmd     *exec.Cmd
	output  *cappedBuffer
	done    chan struct{}
	waitErr error
	log     io.Writer
}

const (
	readyTimeout = 60 * time.Second
	stopTimeout  = 30 * time.Second
)

// StartServer starts `taki serve` on the Env's database. Close stops it.
func (e *Env) StartServer(ctx context.Context) (*Server, error) {
	return e.StartServerWith(ctx)
}

// StartServerWith is StartServer with extra KEY=value settings for the child's environment (they
// override the harness's own environment).
func (e *Env) StartServerWith(ctx context.Context, extra ...string) (*Server, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	// Not CommandContext: on Ctrl-C the server gets SIGTERM from Stop and a chance to shut down
	// cleanly, not an immediate SIGKILL.
	cmd := exec.Command(e.Binary, "serve")
	cmd.Env = e.ChildEnv(append([]string{"TAKI_HTTP_ADDR=" + addr, "TAKI_LOG_LEVEL=warn"}, extra...)...)
	// Its own process group keeps the terminal's Ctrl-C away from it (the harness stops it in order,
	// then drops the database); Pdeathsig kills it if the harness itself dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out := &cappedBuffer{limit: 4 << 20}
	cmd.Stdout, cmd.Stderr = out, out
	s := &Server{BaseURL: "http://" + addr, cmd: cmd, output: out, done: make(chan struct{}), log: e.Log}
	s.Started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s serve: %w", e.Binary, err)
	}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	e.servers = append(e.servers, s)
	fmt.Fprintf(e.Log, "bench: started %s serve on %s (pid %d)\n", e.Binary, addr, cmd.Process.Pid)
	return s, ctx.Err()
}

// WaitReady polls GET /readyz until it answers 200 and returns when that happened. It gives up after
// readyTimeout, when ctx ends, or as soon as the process exits.
func (s *Server) WaitReady(ctx context.Context) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		status, body, err := s.get(ctx, client, "/readyz")
		switch {
		case err == nil && status == http.StatusOK:
			return time.Now(), nil
		case err == nil:
			last = fmt.Sprintf("%d %s", status, strings.TrimSpace(body))
		default:
			last = err.Error()
		}
		select {
		case <-s.done:
			return time.Time{}, s.exitError("before it was ready")
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("server not ready after %s (last /readyz: %s); its output:\n%s",
				readyTimeout, last, s.output.Tail(40))
		case <-tick.C:
		}
	}
}

func (s *Server) get(ctx context.Context, client *http.Client, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.BaseURL+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b), err
}

// clockTicks is USER_HZ, the unit of CPU times in /proc/<pid>/stat: 100 on every Linux build Go
// supports (the kernel keeps it fixed for user space whatever its internal HZ).
const clockTicks = 100

// CPUTime is the user plus system CPU time the process has used so far, read from /proc. Benchmarks
// divide it by the work done: the server's CPU per request or per event, a figure that the rest of
// the machine's load disturbs much less than throughput.
func (s *Server) CPUTime() (time.Duration, error) {
	d, err := processCPU(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("server %w", err)
	}
	return d, nil
}

// PID is the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Done is closed when the process has exited.
func (s *Server) Done() <-chan struct{} { return s.done }

// exitError describes an exit nobody asked for, with the end of the server's output as evidence.
// Call it only once Done is closed.
func (s *Server) exitError(during string) error {
	return fmt.Errorf("server exited %s (%v); its output:\n%s", during, s.waitErr, s.output.Tail(40))
}

// Stop sends SIGTERM and waits for a clean exit; after stopTimeout it kills the process. An exit that
// was not requested, a non-zero exit status or a kill is an error. Whatever the server logged is
// printed (at warn level it should have nothing to say during a clean benchmark), not judged.
func (s *Server) Stop() error {
	var errs []error
	select {
	case <-s.done:
		errs = append(errs, fmt.Errorf("server %s exited on its own: %v", s.BaseURL, s.waitErr))
	default:
		begin := time.Now()
		if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, fmt.Errorf("signal server: %w", err))
		}
		select {
		case <-s.done:
			fmt.Fprintf(s.log, "bench: server %s stopped %s after SIGTERM (%v)\n", s.BaseURL,
				time.Since(begin).Round(time.Millisecond), exitText(s.waitErr))
			if s.waitErr != nil {
				errs = append(errs, fmt.Errorf("server %s exited with %v after SIGTERM", s.BaseURL, s.waitErr))
			}
		case <-time.After(stopTimeout):
			_ = s.cmd.Process.Kill()
			<-s.done
			errs = append(errs, fmt.Errorf("server %s did not stop within %s of SIGTERM; killed", s.BaseURL, stopTimeout))
		}
	}
	if out := strings.TrimSpace(s.output.String()); out != "" {
		lines := strings.Count(out, "\n") + 1
		fmt.Fprintf(s.log, "bench: server %s logged %d line(s) at warn level or above; first and last of them:\n%s\n",
			s.BaseURL, lines, s.output.HeadTail(15, 5))
	}
	if len(errs) > 0 {
		errs = append(errs, fmt.Errorf("server output:\n%s", s.output.Tail(40)))
	}
	return errors.Join(errs...)
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// freeLoopbackAddr asks the kernel for a free loopback port. The port is released before the server
// binds it; on a machine running only this benchmark nobody takes it in between.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	return addr, nil
}

// cappedBuffer keeps the first limit bytes a child writes and counts the rest, so that a server stuck
// logging in a loop cannot fill the harness's memory.
type cappedBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	limit   int
	dropped int
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Report the whole write as done: a short write would make the child's output copier give up.
	n := len(p)
	room := c.limit - c.buf.Len()
	if room < len(p) {
		c.dropped += len(p) - max(room, 0)
		p = p[:max(room, 0)]
	}
	c.buf.Write(p)
	return n, nil
}

func (c *cappedBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.buf.String()
	if c.dropped > 0 {
		s += fmt.Sprintf("\n[... %d more bytes not kept]", c.dropped)
	}
	return s
}

// Tail is the last n lines.
func (c *cappedBuffer) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(c.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// HeadTail is the first head and the last tail lines, with a marker for what is left out between.
func (c *cappedBuffer) HeadTail(head, tail int) string {
	lines := strings.Split(strings.TrimRight(c.String(), "\n"), "\n")
	if len(lines) <= head+tail {
		return strings.Join(lines, "\n")
	}
	out := append([]string{}, lines[:head]...)
	out = append(out, fmt.Sprintf("[... %d lines ...]", len(lines)-head-tail))
	return strings.Join(append(out, lines[len(lines)-tail:]...), "\n")
}
