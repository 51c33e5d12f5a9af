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
// events still hidden by an older running transaction are chased separately, see tailEvents.)
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

	// Without --follow, print everything committed before the start. ReadLog hides an event while an
	// older transaction of the cluster still runs (so that resuming with --after never skips one);
	// wait for those to become visible rather than stop short of the head.
	var target events.Position
	if !follow {
		if target, err = store.LogHead(ctx); err != nil {
			return quietOnCancel(ctx, err)
		}
	}
	w := bufio.NewWriterSize(out, 64<<10)
	pos := from
	var chase, waited time.Duration
	noted := false
	for {
		var woke <-chan struct{}
		if notifier != nil {
			// Taken before the read, so that an append committed after it wakes the wait below.
			_, woke = notifier.Generation()
		}
		// Also taken before the read: every event up to it is visible to the read.
		visible, err := store.VisibleHead(ctx)
		if err != nil {
			return quietOnCancel(ctx, err)
		}
		// An event this binary cannot read is printed in its place, with data null and the reason.
		batch, unreadable, err := handlers.ReadLogPast(ctx, store, pos, eventType, tailBatchSize)
		if err != nil {
			return quietOnCancel(ctx, err)
		}
		if err := writeEvents(w, batch, unreadable); err != nil {
			if isClosedOutput(err) {
				return nil
			}
			return err
		}
		if len(batch) > 0 {
			pos = batch[len(batch)-1].Position
		}
		if len(batch) == tailBatchSize {
			chase = 0
			continue // behind: read on at once
		}
		if follow {
			// Committed events that the read could not see yet: chase them instead of waiting for a
			// wake-up, which their commit may have sent already.
			if target, err = store.LogHead(ctx); err != nil {
				return quietOnCancel(ctx, err)
			}
		}
		if visible.Less(target) {
			chase = min(max(2*chase, tailMinChase), tailMaxChase)
			waited += chase
			if !follow && !noted && waited > tailNoteAfter {
				noted = true
				oldest, err := postgres.OldestWriter(ctx, pool)
				if err != nil || oldest == "" {
					oldest = "none found"
				}
				fmt.Fprintf(stderr, "taki: waiting for events up to %s to become visible: an older transaction of the database cluster is still running (oldest: %s)\n", target, oldest)
			}
			if !sleepCtx(ctx, chase) {
				return nil
			}
			continue
		}
		chase = 0
		if !follow {
			return nil
		}
		timer := time.NewTimer(tailPollInterval)
		select {
		case <-woke:
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
		if ctx.Err() != nil {
			return nil
		}
	}
}

const (
	tailMinChase = time.Millisecond
	tailMaxChase = 100 * time.Millisecond
)

// tailNoteAfter is how long `events tail` waits for hidden events before it says why on stderr.
var tailNoteAfter = 2 * time.Second

// quietOnCancel turns the failure of a read interrupted by SIGINT/SIGTERM into a quiet exit.
func quietOnCancel(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// writeEvents writes batch as JSON lines in the admin API's shape (handlers.LoggedEventOf: password
// hashes redacted) and flushes them.
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
