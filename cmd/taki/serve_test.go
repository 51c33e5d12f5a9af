package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestServeCreatesMigratesServesAndShutsDownGracefully runs `taki serve` as `make run` does, on a
// database that does not exist yet: it creates and migrates it, answers requests, and on cancellation
// (SIGINT/SIGTERM) shuts down cleanly.
func TestServeCreatesMigratesServesAndShutsDownGracefully(t *testing.T) {
	dbURL := missingDatabase(t)
	addr := freeAddr(t)
	t.Setenv("TAKI_DATABASE_URL", dbURL)
	t.Setenv("TAKI_SECRET", "serve-test-secret-0123456789-abcdefghijkl")
	t.Setenv("TAKI_HTTP_ADDR", addr)
	t.Setenv("TAKI_LOG_LEVEL", "error")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		root := newRoot()
		root.SetArgs([]string{"serve"})
		root.SetOut(io.Discard)
		done <- root.ExecuteContext(ctx)
	}()

	// Wait for the listener: the condition is "it answers", bounded by a deadline.
	client := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("readyz: %d %s", resp.StatusCode, body)
			}
			break
		}
		select {
		case err := <-done:
			t.Fatalf("serve ended before answering: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // waiting for a port to open, bounded above
	}

	// Register someone, then shut down (what SIGINT/SIGTERM does): serve drains HTTP, stops the
	// projections, closes the pool and returns without an error.
	resp, err := client.Post("http://"+addr+"/api/v1/users", "application/json",
		strings.NewReader(`{"email":"drain@example.com","password":"drain password","display_name":"Drain"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("register: %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return after shutdown")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("the listener still accepts connections after serve returned")
	}
	// The pool is closed and the database is there, migrated, with the user.
	out := mustTaki(t, "migrate", "status")
	if strings.Contains(out, "pending") {
		t.Fatalf("migrations pending after serve:\n%s", out)
	}
}
