package postgres

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ProjectorCollector exports each projection's lag (events not yet applied) at scrape time.
type ProjectorCollector struct {
	p   *Projector
	lag *prometheus.Desc
	up  *prometheus.Desc
}

// NewProjectorCollector returns a collector for p.
func NewProjectorCollector(p *Projector) *ProjectorCollector {
	return &ProjectorCollector{
		p:   p,
		lag: prometheus.NewDesc("taki_projection_lag_events", "Events in the log that the projection has not applied yet.", []string{"projection"}, nil),
		up:  prometheus.NewDesc("taki_projection_running", "1 while the projection's subscriber runs in this process.", []string{"projection"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *ProjectorCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lag
	ch <- c.up
}

// Collect implements prometheus.Collector.
func (c *ProjectorCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	statuses, err := c.p.Statuses(ctx)
	if err != nil {
		return
	}
	for _, s := range statuses {
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(s.LagEvents), s.Name)
		running := 0.0
		if s.Status == "running" {
			running = 1
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, running, s.Name)
	}
}
