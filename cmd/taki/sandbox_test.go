package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"taki/infra/logging"
	"taki/infra/payments"
)

// TestSandboxServesAPaymentAndStopsOnSIGTERM runs `taki sandbox` as its own process, takes a payment
// through the real client, and stops it with SIGTERM.
func TestSandboxServesAPaymentAndStopsOnSIGTERM(t *testing.T) {
	addr := freeAddr(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TAKI_MAIN_TEST_ARGS=sandbox --access-token sandbox-token --latency 1ms",
		"TAKI_SANDBOX_ADDR="+addr, "TAKI_LOG_LEVEL=error", "TAKI_SECRET=", "TAKI_DATABASE_URL=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	}()

	c, err := payments.NewClient(payments.ClientConfig{BaseURL: "http://" + addr, AccessToken: "sandbox-token",
		AttemptTimeout: 2 * time.Second, MaxAttempts: 1}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var p payments.Payment
	for {
		// Waiting for the port to open, bounded by ctx; the first answer ends the loop.
		p, err = c.CreatePayment(ctx, payments.CreatePaymentRequest{IdempotencyKey: "cli-1", AmountMinor: 990,
			Currency: "USD", SourceID: payments.NonceOK})
		if err == nil || !payments.IsTransient(err) || ctx.Err() != nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("sandbox exited before answering: %v\n%s", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err != nil || p.Status != payments.PaymentCompleted || p.AmountMoney.Amount != 990 {
		t.Fatalf("payment: %+v %v\n%s", p, err, stderr.String())
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("sandbox exited with %v after SIGTERM\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("sandbox did not stop on SIGTERM")
	}
	if !bytes.Contains(stdout.Bytes(), []byte("payments sandbox on http://"+addr)) {
		t.Errorf("stdout %q does not name the address", stdout.String())
	}
}

func TestSandboxRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"sandbox", "--fail-mode", "boom"},
		{"sandbox", "--fail-ratio", "0.5"},
		{"sandbox", "--webhook-url", "http://127.0.0.1:1/hook"},
		{"sandbox", "--addr", "not-an-address"},
	} {
		if _, err := taki(t, args...); err == nil {
			t.Errorf("taki %v succeeded", args)
		}
	}
}
