package main

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// LoadPhase is a closed-loop load: Workers goroutines each run one operation after another, first for
// Warmup (not counted: connections, caches and JIT-like effects such as prepared statements settle),
// then for Duration (counted).
type LoadPhase struct {
	Workers  int
	Warmup   time.Duration
	Duration time.Duration
	// OpTimeout bounds one operation, so that a stuck request cannot hold the phase open.
	OpTimeout time.Duration
	// ServerPID, when not 0, is the server under load: its CPU time is measured too (LoadStats.CPU).
	ServerPID int
}

// maxOpsPerWorker is a backstop on the loop count; the phase's end time is the real bound.
const maxOpsPerWorker = 50_000_000

// LoadStats is what a phase measured.
type LoadStats struct {
	// Ops counts operations that completed inside the measured window.
	Ops int
	// Window is the measured window's length.
	Window time.Duration
	// Latencies holds the operations that both started and completed inside the window.
	Latencies Latencies
	// CPU is what the client, the server and PostgreSQL used over the window; CPUErr says why it is
	// missing when it could not be read.
	CPU    CPUUse
	CPUErr error
}

// Rate is operations per second over the window.
func (s LoadStats) Rate() float64 {
	if s.Window <= 0 {
		return 0
	}
	return float64(s.Ops) / s.Window.Seconds()
}

// Op is one operation of worker w; i counts that worker's operations from 0.
type Op func(ctx context.Context, w, i int) error

// Run drives op under the phase. The first error stops every worker and is returned.
func (p LoadPhase) Run(ctx context.Context, op Op) (LoadStats, error) {
	if p.Workers < 1 || p.Duration <= 0 || p.Warmup < 0 {
		return LoadStats{}, fmt.Errorf("load phase: bad parameters %+v", p)
	}
	if p.OpTimeout <= 0 {
		p.OpTimeout = 30 * time.Second
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	begin := time.Now()
	from := begin.Add(p.Warmup)
	until := from.Add(p.Duration)

	type workerStats struct {
		ops int
		lat Latencies
	}
	stats := make([]workerStats, p.Workers)
	var (
		cpu    CPUUse
		cpuErr error
	)
	cpuDone := make(chan struct{})
	go func() {
		defer close(cpuDone)
		cpu, cpuErr = measureCPU(ctx, p.ServerPID, from, until)
	}()
	var wg sync.WaitGroup
	for w := range p.Workers {
		wg.Go(func() {
			st := &stats[w]
			for i := 0; i < maxOpsPerWorker; i++ {
				start := time.Now()
				if !start.Before(until) || ctx.Err() != nil {
					return
				}
				opCtx, opCancel := context.WithTimeout(ctx, p.OpTimeout)
				err := op(opCtx, w, i)
				opCancel()
				done := time.Now()
				if err != nil {
					if ctx.Err() == nil {
						cancel(fmt.Errorf("worker %d, operation %d: %w", w, i, err))
					}
					return
				}
				if done.Before(from) || done.After(until) {
					continue
				}
				st.ops++
				if !start.Before(from) {
					st.lat.Add(done.Sub(start))
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return LoadStats{}, err
	}
	<-cpuDone
	out := LoadStats{Window: p.Duration, CPU: cpu, CPUErr: cpuErr}
	for i := range stats {
		out.Ops += stats[i].ops
		out.Latencies.Merge(&stats[i].lat)
	}
	return out, nil
}
