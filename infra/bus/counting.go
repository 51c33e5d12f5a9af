package bus

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"taki/events"
)

// CountingLog counts appended events by stream type for /metrics.
func CountingLog(l events.Log, reg prometheus.Registerer) events.Log {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "taki_events_appended_total",
		Help: "Events appended to the log, by stream type.",
	}, []string{"stream_type"})
	reg.MustRegister(c)
	return countingLog{Log: l, appended: c}
}

type countingLog struct {
	events.Log
	appended *prometheus.CounterVec
}

func (l countingLog) Append(ctx context.Context, appends ...events.Append) (events.Position, error) {
	pos, err := l.Log.Append(ctx, appends...)
	if err == nil {
		for _, a := range appends {
			l.appended.WithLabelValues(a.StreamType).Add(float64(len(a.Events)))
		}
	}
	return pos, err
}
