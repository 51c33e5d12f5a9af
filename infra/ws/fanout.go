package ws

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"taki/events"
	"taki/handlers"
)

// Fanout delivers the event log to this instance's sockets (DESIGN.md, "Real time"): a tail of the
// log (postgres.Tail) hands it every committed event in log order, the feed says which users get which
// frame, and each frame is encoded once and queued on those users' sockets here. Every instance runs
// its own; they share nothing but the log.
type Fanout struct {
	hub        *Hub
	feed       Feed
	log        *slog.Logger
	events     prometheus.Counter
	frames     prometheus.Counter
	unreadable prometheus.Counter
	lag        prometheus.Gauge
}

// NewFanout returns a fan-out to hub's sockets. Its metrics go to reg.
func NewFanout(hub *Hub, feed Feed, logger *slog.Logger, reg prometheus.Registerer) (*Fanout, error) {
	if hub == nil || feed == nil || logger == nil || reg == nil {
		return nil, errors.New("new fan-out: hub, feed, logger and registry are required")
	}
	f := &Fanout{hub: hub, feed: feed, log: logger,
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "taki_ws_fanout_events_total", Help: "Events of the log the WebSocket fan-out handled."}),
		frames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "taki_ws_fanout_frames_total", Help: "Event frames the WebSocket fan-out queued on sockets."}),
		unreadable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "taki_ws_fanout_unreadable_events_total",
			Help: "Events the WebSocket fan-out could not deliver because this binary cannot read them, or an earlier event of their stream (written by a newer binary, or damaged)."}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "taki_ws_fanout_lag_seconds", Help: "Age of the last event the WebSocket fan-out handled when it handled it."}),
	}
	collectors := []prometheus.Collector{f.events, f.frames, f.unreadable, f.lag}
	for i, c := range collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range collectors[:i] {
				reg.Unregister(done)
			}
			return nil, err
		}
	}
	return f, nil
}

const fanoutMaxRetry = 5 * time.Second

// Deliver queues the frames of batch's events, in order; it is the tail's callback. An event whose
// frames cannot be built (the database is unreachable) is retried until it succeeds or ctx ends, so
// the order holds and no socket misses a frame; the error returned is ctx's. An event this binary
// cannot read, or whose chat cannot be folded because of one, is handed to Unreadable instead:
// retrying it cannot succeed, and would stop delivery to every socket of this instance.
func (f *Fanout) Deliver(ctx context.Context, batch []events.Envelope) error {
	for _, env := range batch {
		frames, err := f.framesOf(ctx, env)
		if errors.Is(err, events.ErrUndecodable) {
			f.Unreadable(ctx, env, err)
			continue
		}
		if err != nil {
			return err
		}
		for _, fr := range frames {
			b, err := encodeEvent(env, fr)
			if err != nil {
				// A bug (data that does not encode), not a condition retrying could fix.
				f.log.ErrorContext(ctx, "websocket frame not encoded", slog.String("error", err.Error()))
				continue
			}
			f.frames.Add(float64(f.hub.SendEvent(fr.To, env.Position, b)))
		}
		f.events.Inc()
		if !env.OccurredAt.IsZero() {
			f.lag.Set(time.Since(env.OccurredAt).Seconds())
		}
	}
	return nil
}

func (f *Fanout) framesOf(ctx context.Context, env events.Envelope) ([]handlers.FeedFrame, error) {
	for failures := 1; ; failures++ {
		frames, err := f.feed.Frames(ctx, env)
		if err == nil || errors.Is(err, events.ErrUndecodable) {
			return frames, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		wait := min(time.Duration(failures)*100*time.Millisecond, fanoutMaxRetry)
		f.log.ErrorContext(ctx, "websocket fan-out cannot build an event's frames; retrying",
			slog.String("event_type", env.Type), slog.String("position", env.Position.String()),
			slog.String("error", err.Error()), slog.Duration("retry_in", wait))
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		}
	}
}

// Unreadable handles env, an event of the log this binary cannot read (err wraps
// events.ErrUndecodable): a newer binary wrote it during a rolling deploy, or its row is damaged; or
// an event of a stream stuck on one, which cannot be folded past it. No frame can be built for it, so
// everyone who may have had one (the feed's guess: the chat's members, a payment's owner, else every
// socket here) gets resync_required at its position, in order with the event frames: they reload
// their state through the API, and a later ?since= starts past it. The tail calls it for events it
// cannot decode, Deliver for events it cannot fold.
func (f *Fanout) Unreadable(ctx context.Context, env events.Envelope, err error) {
	f.unreadable.Inc()
	f.events.Inc()
	to, all := f.feed.Unreadable(ctx, env)
	attrs := []any{slog.String("event_type", env.Type), slog.Int("schema_version", env.SchemaVersion),
		slog.String("stream_type", env.StreamType), slog.String("stream_id", env.StreamID.String()),
		slog.String("position", env.Position.String()), slog.String("error", err.Error())}
	if !all && len(to) == 0 {
		f.log.DebugContext(ctx, "websocket fan-out cannot deliver an event; nobody could have had a frame of it", attrs...)
		return
	}
	sockets, encErr := f.hub.SendResync(to, all, env.Position)
	if encErr != nil {
		f.log.ErrorContext(ctx, "websocket frame not encoded", slog.String("error", encErr.Error()))
		return
	}
	f.log.ErrorContext(ctx, "websocket fan-out cannot deliver an event; its possible recipients were sent resync_required",
		append(attrs, slog.Int("sockets", sockets))...)
}
