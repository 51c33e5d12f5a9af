package main

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var l Latencies
	if l.Percentile(0.99) != 0 {
		t.Error("empty percentile is not 0")
	}
	for i := 100; i >= 1; i-- {
		l.Add(time.Duration(i) * time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 50 * time.Millisecond, 0.99: 99 * time.Millisecond, 1: 100 * time.Millisecond, 0.001: time.Millisecond} {
		if got := l.Percentile(q); got != want {
			t.Errorf("p%v = %v, want %v", q, got, want)
		}
	}
}

func TestLoadPhaseCountsOnlyTheWindow(t *testing.T) {
	var calls atomic.Int64
	p := LoadPhase{Workers: 4, Warmup: 100 * time.Millisecond, Duration: 200 * time.Millisecond}
	st, err := p.Run(context.Background(), func(ctx context.Context, w, i int) error {
		calls.Add(1)
		time.Sleep(5 * time.Millisecond)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.Ops == 0 || int64(st.Ops) >= calls.Load() {
		t.Errorf("counted %d of %d operations; want some, and fewer than all (warm-up excluded)", st.Ops, calls.Load())
	}
	if st.Latencies.Len() == 0 || st.Latencies.Len() > st.Ops {
		t.Errorf("%d latencies for %d operations", st.Latencies.Len(), st.Ops)
	}
	// 4 workers sleeping 5 ms per operation: at most about 800/s, less on a loaded machine.
	if r := st.Rate(); r > 1000 {
		t.Errorf("rate %.0f/s, want at most about 800/s", r)
	}
}

func TestLoadPhaseStopsOnFirstError(t *testing.T) {
	boom := errors.New("boom")
	p := LoadPhase{Workers: 3, Duration: 10 * time.Second}
	begin := time.Now()
	_, err := p.Run(context.Background(), func(ctx context.Context, w, i int) error {
		if w == 1 && i == 3 {
			return boom
		}
		time.Sleep(time.Millisecond)
		return nil
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "worker 1, operation 3") {
		t.Errorf("error %v, want boom from worker 1, operation 3", err)
	}
	if time.Since(begin) > 2*time.Second {
		t.Error("the phase ran on after the error")
	}
}

func TestLoadPhaseStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := LoadPhase{Workers: 2, Duration: 10 * time.Second}.Run(ctx, func(ctx context.Context, w, i int) error {
		time.Sleep(time.Millisecond)
		return nil
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want the context's", err)
	}
}
