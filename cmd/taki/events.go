package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"taki/events"
	"taki/handlers"
	"taki/infra/config"
	"taki/infra/postgres"
)

// tailBatchSize is how many events one read of `events tail` returns at most; output is flushed per
// batch.
var tailBatchSize = 1000

// tailPollInterval is how long `events tail --follow` waits for a wake-up before reading again anyway:
// wake-ups (NOTIFY from the servers) are the normal path and the poll covers a lost one. (Committed
// events still hidden by an older running transaction are chased separately, see postgres.Tail.)
var tailPollInterval = time.Second

func newEventsCmd(env *environment) *cobra.Command {
	cmd := &cobra.Command{Use: "events", Short: "Read the event log"}
	var (
		after, eventType string
		follow           bool
	)
	tail := &cobra.Command{
		Use:   "tail",
		Short: "Print the event log as JSON lines (the admin API's event shape, secrets redacted)",
		Long: "Print every event after --after (default: the start of the log), of --type (default: all), " +
			"one JSON object per line in log order. With --follow, keep printing events as they commit " +
			"until SIGINT/SIGTERM. Each line's \"position\" can be passed back as --after.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Usage errors first, before any connection.
			var from events.Position
			if after != "" {
				p, err := events.ParsePosition(after)
				if err != nil {
					return usageError("--after", fmt.Sprintf("%q is not a log position (want TX.OFFSET as printed in \"position\", e.g. 1234.0)", after))
				}
				from = p
			}
			registry := events.NewRegistry()
			if eventType != "" && !registry.Known(eventType) {
				return usageError("--type", fmt.Sprintf("unknown event type %q; known types: %s", eventType, strings.Join(registry.Types(), ", ")))
			}
			cfg, err := env.config()
			if err != nil {
				return err
			}
			return tailEvents(cmd.Context(), env, cfg, registry, cmd.OutOrStdout(), cmd.ErrOrStderr(), from, eventType, follow)
		},
	}
	f := tail.Flags()
	f.StringVar(&after, "after", "", "print only events after this position (a \"position\" printed before); default: the start")
	f.StringVar(&eventType, "type", "", "print only events of this type (e.g. user.registered); default: all")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new events as they commit, until SIGINT/SIGTERM")
	cmd.AddCommand(tail)
	return cmd
}

// tailEvents prints the log after from to out. It returns nil when ctx ends (SIGINT/SIGTERM) and when
// out is closed by its reader (EPIPE: `taki events tail | head`).
func tailEvents(ctx context.Context, env *environment, cfg config.Config, registry *events.Registry, out, stderr io.Writer,
	from events.Position, eventType string, follow bool) error {
	logger := env.logger(cfg, nil)
	pool, err := env.pool(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	var notifier *postgres.Notifier
	if follow {
		// Woken by the servers' NOTIFY after their appends; its connection ends with ctx.
		notifier = postgres.NewNotifier(cfg.DatabaseURL, logger)
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			notifier.Run(runCtx)
		}()
		defer func() { stop(); <-done }()
	}
	// The store only reads here: no notifier of its own to announce appends with.
	store, err := postgres.NewEventStore(pool, registry, nil, logger, nil)
	if err != nil {
		return err
	}
	defer store.Close()

	// Unreadable has no error to return, so the printer ends the run itself when out fails.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	p := &printer{w: bufio.NewWriterSize(out, 64<<10), stop: stop}
	tcfg := postgres.TailConfig{
		After: &from, EventType: eventType, StopOnError: true,
		// Without --follow, print everything committed before the start. ReadLog hides an event while
		// an older transaction of the cluster still runs (so that resuming with --after never skips
		// one): the tail waits for those rather than stop short of the head.
		StopAtHead:   !follow,
		BatchSize:    tailBatchSize,
		PollInterval: tailPollInterval,
		// An event this binary cannot read is printed in its place, with data null and the reason.
		Unreadable: func(_ context.Context, env events.Envelope, err error) {
			_ = p.print([]events.Envelope{env}, map[events.Position]string{env.Position: err.Error()})
		},
		Logger: logger,
	}
	if !follow {
		tcfg.HiddenAfter = tailNoteAfter
		tcfg.Hidden = func(ctx context.Context, upTo events.Position) {
			oldest, err := postgres.OldestWriter(ctx, pool)
			if err != nil || oldest == "" {
				oldest = "none found"
			}
			fmt.Fprintf(stderr, "taki: waiting for events up to %s to become visible: an older transaction of the database cluster is still running (oldest: %s)\n", upTo, oldest)
		}
	}
	tail, err := postgres.NewTail(store, notifier, tcfg)
	if err != nil {
		return err
	}
	err = tail.Run(runCtx, func(_ context.Context, batch []events.Envelope) error { return p.print(batch, nil) })
	if p.err != nil {
		if isClosedOutput(p.err) {
			return nil
		}
		return p.err
	}
	return quietOnCancel(ctx, err)
}

// tailNoteAfter is how long `events tail` waits for hidden events before it says why on stderr.
var tailNoteAfter = 2 * time.Second

// quietOnCancel turns the failure of a read interrupted by SIGINT/SIGTERM into a quiet exit.
func quietOnCancel(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// printer writes events as JSON lines in the admin API's shape (handlers.LoggedEventOf: password
// hashes redacted), flushed per call. Its first failure stops the run and stays in err: nothing
// after a failed write may follow it to the output.
type printer struct {
	w    *bufio.Writer
	stop context.CancelFunc
	err  error
}

func (p *printer) print(batch []events.Envelope, unreadable map[events.Position]string) error {
	if p.err == nil {
		if p.err = writeEvents(p.w, batch, unreadable); p.err != nil {
			p.stop()
		}
	}
	return p.err
}

// writeEvents writes batch as JSON lines and flushes them.
func writeEvents(w *bufio.Writer, batch []events.Envelope, unreadable map[events.Position]string) error {
	logged, err := handlers.LoggedEventsOf(batch, unreadable)
	if err != nil {
		return err
	}
	for _, le := range logged {
		line, err := json.Marshal(le)
		if err != nil {
			return fmt.Errorf("encode event %s: %w", le.ID, err)
		}
		line = append(line, '\n')
		if _, err := w.Write(line); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// isClosedOutput reports whether err says the reader of our output went away.
func isClosedOutput(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrClosedPipe)
}
