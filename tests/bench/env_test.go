package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"taki/infra/postgres/pgtest"
)

func TestDatabaseURL(t *testing.T) {
	got, err := databaseURL("postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "taki_bench_x")
	if err != nil || got != "postgres://postgres@127.0.0.1:5432/taki_bench_x?sslmode=disable" {
		t.Errorf("got %q, %v", got, err)
	}
	if _, err := databaseURL("host=127.0.0.1 dbname=postgres", "x"); err == nil {
		t.Error("a keyword/value string was accepted")
	}
}

func TestCheckBinary(t *testing.T) {
	dir := t.TempDir()
	if err := CheckBinary(filepath.Join(dir, "taki")); err == nil || !strings.Contains(err.Error(), "make build") {
		t.Errorf("missing binary: %v, want a hint to build it", err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CheckBinary(plain); err == nil {
		t.Error("a non-executable file was accepted")
	}
	if err := CheckBinary(dir); err == nil {
		t.Error("a directory was accepted")
	}
}

func TestRunFailsClearlyWithoutBinary(t *testing.T) {
	var stderr strings.Builder
	code := run([]string{"-bin", filepath.Join(t.TempDir(), "taki")}, io.Discard, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "not found") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"-only", "nope"}, io.Discard, &stderr); code == 0 || !strings.Contains(stderr.String(), "unknown benchmark") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}

func TestCreateAndDropDatabase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := pgtest.AdminURL()
	name := "taki_bench_test_" + randomHex(4)
	if err := createDatabase(ctx, admin, name); err != nil {
		t.Fatal(err)
	}
	dbURL, err := databaseURL(admin, name)
	if err != nil {
		t.Fatal(err)
	}
	// A connection left open (a server that did not stop) must not keep the database alive.
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := dropDatabase(ctx, admin, name); err != nil {
		t.Fatal(err)
	}
	ac, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close(context.Background())
	var exists bool
	if err := ac.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil || exists {
		t.Errorf("database still exists (%v, %v)", exists, err)
	}
	if err := dropDatabase(ctx, admin, name); err != nil {
		t.Errorf("dropping twice: %v", err)
	}
}

func TestChildEnvOverrides(t *testing.T) {
	t.Setenv("TAKI_DATABASE_URL", "postgres://elsewhere/taki")
	t.Setenv("TAKI_PROJECTION_BATCH_SIZE", "1000")
	e := &Env{DatabaseURL: "postgres://here/taki_bench_x", Secret: "s"}
	env := e.ChildEnv("TAKI_LOG_LEVEL=warn")
	count := map[string]int{}
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		count[k]++
	}
	for _, want := range []string{"TAKI_DATABASE_URL=postgres://here/taki_bench_x", "TAKI_SECRET=s", "TAKI_LOG_LEVEL=warn", "TAKI_PROJECTION_BATCH_SIZE=1000"} {
		k, _, _ := strings.Cut(want, "=")
		if count[k] != 1 || !contains(env, want) {
			t.Errorf("child env lacks %s exactly once", want)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestCappedBuffer(t *testing.T) {
	b := &cappedBuffer{limit: 10}
	for _, s := range []string{"line1\n", "line2\n", "line3\n"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("write reported %d, %v", n, err)
		}
	}
	if got := b.String(); !strings.HasPrefix(got, "line1\nline") || !strings.Contains(got, "8 more bytes") {
		t.Errorf("got %q", got)
	}
	full := &cappedBuffer{limit: 1 << 10}
	for i := range 30 {
		_, _ = full.Write([]byte("l" + string(rune('a'+i%26)) + "\n"))
	}
	ht := full.HeadTail(2, 1)
	if !strings.HasPrefix(ht, "la\nlb\n[... 27 lines ...]\nld") {
		t.Errorf("HeadTail = %q", ht)
	}
}

func TestServerCPUTime(t *testing.T) {
	// The test's own process stands in for a server. It spins until /proc shows CPU time going up:
	// how much wall time that takes depends on the machine's load, so only a bound on it is asserted.
	self, err := os.FindProcess(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cmd: &exec.Cmd{Process: self}}
	before, err := s.CPUTime()
	if err != nil {
		t.Fatal(err)
	}
	for begin := time.Now(); time.Since(begin) < 10*time.Second; {
		after, err := s.CPUTime()
		if err != nil {
			t.Fatal(err)
		}
		if after-before >= 50*time.Millisecond {
			return
		}
	}
	t.Error("10 s of spinning did not show 50 ms of CPU time")
}
