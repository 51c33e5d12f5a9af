package main

import (
	"slices"
	"time"
)

// Latencies collects the durations of one load phase. Each worker owns one (no locking on the hot
// path) and they are merged at the end; a phase is bounded in time, so the slices are too.
type Latencies struct {
	d []time.Duration
}

// Add records one duration.
func (l *Latencies) Add(d time.Duration) { l.d = append(l.d, d) }

// Merge appends other's durations to l.
func (l *Latencies) Merge(other *Latencies) { l.d = append(l.d, other.d...) }

// Len is the number of recorded durations.
func (l *Latencies) Len() int { return len(l.d) }

// Percentile returns the q-quantile (0 < q <= 1) by the nearest-rank method, or 0 without samples.
// It sorts in place, which is fine once the phase is over.
func (l *Latencies) Percentile(q float64) time.Duration {
	if len(l.d) == 0 {
		return 0
	}
	slices.Sort(l.d)
	rank := int(q*float64(len(l.d))+0.999999999) - 1
	rank = max(0, min(rank, len(l.d)-1))
	return l.d[rank]
}

// ms converts a duration to fractional milliseconds for the report.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
