package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"taki/events"
	"taki/infra/postgres"
	"taki/projections"
	"taki/queries"
)

func newProjectionsCmd(env *environment) *cobra.Command {
	cmd := &cobra.Command{Use: "projections", Short: "Inspect and rebuild read models"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List projections with their checkpoint, lag in events and status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			srv, err := env.server(ctx)
			if err != nil {
				return err
			}
			defer srv.Close()
			statuses, err := srv.Projector.Statuses(ctx)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tCHECKPOINT\tLAG\tSTATUS")
			for _, s := range statuses {
				// This process runs no subscriber: describe the projection by its lag alone.
				status := "caught up"
				if s.LagEvents > 0 {
					status = "behind"
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", s.Name, s.Checkpoint, s.LagEvents, status)
			}
			return w.Flush()
		},
	})
	cmd.AddCommand(newReplayCmd(env))
	cmd.AddCommand(newVerifyCmd(env))
	return cmd
}

// oneProjection checks that verb was given one projection name (or all); the name itself is checked
// by replayNames.
func oneProjection(verb string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != 1 {
			return usageError("NAME", fmt.Sprintf("%s takes one projection name (%s) or all, got %d arguments", verb, strings.Join(projectionNames, ", "), len(args)))
		}
		return nil
	}
}

// projectionNames are the projections replay knows, in the order "all" replays them.
var projectionNames = []string{queries.UsersReadModel, queries.ChatsReadModel, queries.PaymentsReadModel}

// newProjection builds the projection called name on pool.
func newProjection(name string, pool *pgxpool.Pool) (postgres.Projection, error) {
	switch name {
	case queries.UsersReadModel:
		return projections.NewUsers(pool)
	case queries.ChatsReadModel:
		return projections.NewChats(pool)
	case queries.PaymentsReadModel:
		return projections.NewPayments(pool)
	}
	return nil, unknownProjection(name)
}

func unknownProjection(name string) error {
	return usageError("NAME", fmt.Sprintf("unknown projection %q; known projections: %s (or all)", name, strings.Join(projectionNames, ", ")))
}

// replayNames resolves replay's argument.
func replayNames(arg string) ([]string, error) {
	if arg == "all" {
		return slices.Clone(projectionNames), nil
	}
	if !slices.Contains(projectionNames, arg) {
		return nil, unknownProjection(arg)
	}
	return []string{arg}, nil
}

func newReplayCmd(env *environment) *cobra.Command {
	var yes bool
	batchSize := 10000
	cmd := &cobra.Command{
		Use:   "replay NAME|all",
		Short: "Empty a read model and rebuild it from the event log, whether servers run or not",
		Long: `Replay truncates the projection's tables and rewinds its consumer group under the group's lock,
then applies the log up to its head as it was after the reset, in large batches, reading the log once
for all the projections named. Servers may keep running: queries see partial read models until it is
done, and a server's subscribers take turns with it under the same locks, so no event is applied twice.`,
		Args: oneProjection("replay"),
		RunE: func(cmd *cobra.Command, args []string) error {
			names, err := replayNames(args[0])
			if err != nil {
				return err
			}
			if batchSize < 1 {
				return usageError("--batch-size", "must be positive")
			}
			if !yes {
				if err := confirmReplay(cmd.InOrStdin(), cmd.ErrOrStderr(), names); err != nil {
					return err
				}
			}
			return replay(cmd.Context(), env, names, batchSize, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	cmd.Flags().IntVar(&batchSize, "batch-size", batchSize, "events read and applied per transaction while catching up")
	return cmd
}

// isTerminal reports whether f is an *os.File on a terminal.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	return ok && term.IsTerminal(int(file.Fd()))
}

var errNotConfirmed = errors.New("replay cancelled")

// confirmReplay asks on the terminal before anything is emptied.
func confirmReplay(in io.Reader, prompt io.Writer, names []string) error {
	if !isTerminal(in) {
		return usageError("--yes", "replay empties read models and standard input is not a terminal to confirm on: pass --yes")
	}
	fmt.Fprintf(prompt, "Replay %s? Their read models are emptied and rebuilt from the event log; queries see partial data until it is done. [y/N] ",
		strings.Join(names, ", "))
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return errNotConfirmed
}

// replay resets each projection, then brings them all back to the log head as it was after the resets
// in one pass over the log by the batched catch-up path. A running server's subscribers may take turns
// with it (each batch holds the groups' locks); either way each event is applied once.
func replay(ctx context.Context, env *environment, names []string, batchSize int, out, errOut io.Writer) error {
	cfg, err := env.config()
	if err != nil {
		return err
	}
	pool, err := postgres.Connect(ctx, cfg.DatabaseURL, 4)
	if err != nil {
		return err
	}
	defer pool.Close()
	projs := make([]postgres.Projection, len(names))
	for i, name := range names {
		if projs[i], err = newProjection(name, pool); err != nil {
			return err
		}
	}
	for _, proj := range projs {
		if err := postgres.ResetProjection(ctx, pool, proj); err != nil {
			return err
		}
	}
	store, err := postgres.NewEventStore(pool, events.NewRegistry(), nil, env.logger(cfg, nil), time.Now)
	if err != nil {
		return err
	}
	defer store.Close()
	head, err := store.LogHead(ctx)
	if err != nil {
		return err
	}
	total, err := countBetween(ctx, pool, events.Position{}, head)
	if err != nil {
		return err
	}
	start := time.Now()
	progress := newReplayProgress(errOut, names, total)
	read, err := postgres.CatchUp(ctx, pool, events.NewRegistry(), projs, postgres.CatchUpOptions{
		BatchSize: batchSize, Until: head,
		Progress: func(_ events.Position, read int64) { progress.update(read) },
		Stalled: func(waited time.Duration) {
			oldest, err := postgres.OldestWriter(ctx, pool)
			if err != nil || oldest == "" {
				oldest = "none found"
			}
			fmt.Fprintf(errOut, "replay has waited %s for committed events to become visible; an older transaction of the cluster holds them back: %s\n",
				waited.Round(time.Second), oldest)
		},
	})
	if err != nil {
		return fmt.Errorf("replay %s: %w", strings.Join(names, ", "), err)
	}
	progress.finish(total)
	elapsed := time.Since(start)
	rate := float64(read) / max(elapsed.Seconds(), 1e-9)
	fmt.Fprintf(out, "replayed %s: %d events up to %s in %s (%.0f events/s)\n",
		strings.Join(names, ", "), read, head, elapsed.Round(time.Millisecond), rate)
	return nil
}

// countBetween counts the log's events after from and up to to.
func countBetween(ctx context.Context, pool *pgxpool.Pool, from, to events.Position) (int64, error) {
	var n int64
	err := pool.QueryRow(ctx, `SELECT count(*) FROM events
		WHERE (transaction_id, "offset") > ($1::text::xid8, $2) AND (transaction_id, "offset") <= ($3::text::xid8, $4)`,
		strconv.FormatUint(from.TxID, 10), from.Offset, strconv.FormatUint(to.TxID, 10), to.Offset).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count events from %s to %s: %w", from, to, err)
	}
	return n, nil
}

// replayProgress shows a bar with events/s and ETA on a terminal, a plain line every second otherwise.
type replayProgress struct {
	w     io.Writer
	names string
	total int64
	bar   *progressbar.ProgressBar
	every time.Duration
	start time.Time
	shown time.Time // of the last plain line
}

func newReplayProgress(w io.Writer, names []string, total int64) *replayProgress {
	p := &replayProgress{w: w, names: strings.Join(names, ", "), total: total, every: time.Second, start: time.Now()}
	if isTerminal(w) {
		p.every = 100 * time.Millisecond
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("replay "+p.names),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("events"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionFullWidth(),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		)
	}
	return p
}

func (p *replayProgress) update(done int64) {
	if p.bar != nil {
		_ = p.bar.Set64(done)
		return
	}
	if time.Since(p.shown) < p.every {
		return
	}
	p.shown = time.Now()
	elapsed := time.Since(p.start)
	rate := float64(done) / max(elapsed.Seconds(), 1e-9)
	line := fmt.Sprintf("replay %s: %d/%d events, %.0f events/s", p.names, done, p.total, rate)
	if rate > 0 {
		line += ", ETA " + time.Duration(float64(p.total-done)/rate*float64(time.Second)).Round(time.Second).String()
	}
	fmt.Fprintln(p.w, line)
}

func (p *replayProgress) finish(done int64) {
	if p.bar != nil {
		_ = p.bar.Set64(done)
		_ = p.bar.Finish()
	}
}

// errVerifyDiffers makes verify exit 1 once it has printed the differing rows.
var errVerifyDiffers = errors.New("verify: the live read model differs from a fresh rebuild")

func newVerifyCmd(env *environment) *cobra.Command {
	batchSize, sample := 5000, 20
	cmd := &cobra.Command{
		Use:   "verify NAME|all",
		Short: "Rebuild a read model into scratch tables and diff it against the live one",
		Long: `Verify rebuilds the projection's read model from the log into temporary tables, in short
transactions, up to the group's checkpoint, and compares them with the live tables both ways where the
two meet in one snapshot (after 20 tries it locks the group for the last events instead). It prints the
differing rows and exits 1 when they differ; the live read model is not changed, and servers may keep
running and applying events meanwhile.`,
		Args: oneProjection("verify"),
		RunE: func(cmd *cobra.Command, args []string) error {
			names, err := replayNames(args[0])
			if err != nil {
				return err
			}
			if batchSize < 1 {
				return usageError("--batch-size", "must be positive")
			}
			if sample < 1 {
				return usageError("--rows", "must be positive")
			}
			return verify(cmd.Context(), env, names, batchSize, sample, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().IntVar(&batchSize, "batch-size", batchSize, "events read and applied per round trip while rebuilding")
	cmd.Flags().IntVar(&sample, "rows", sample, "differing rows shown per table and direction")
	return cmd
}

// verify rebuilds each projection into scratch tables and prints how the live tables differ.
func verify(ctx context.Context, env *environment, names []string, batchSize, sample int, out, errOut io.Writer) error {
	cfg, err := env.config()
	if err != nil {
		return err
	}
	logger := env.logger(cfg, nil)
	pool, err := postgres.Connect(ctx, cfg.DatabaseURL, 4)
	if err != nil {
		return err
	}
	defer pool.Close()
	store, err := postgres.NewEventStore(pool, events.NewRegistry(), nil, logger, time.Now)
	if err != nil {
		return err
	}
	defer store.Close()
	start := time.Now()
	var total int64
	differs := false
	for _, name := range names {
		proj, err := newProjection(name, pool)
		if err != nil {
			return err
		}
		cp, err := readGroupCheckpoint(ctx, pool, name)
		if err != nil {
			return err
		}
		n, err := countBetween(ctx, pool, events.Position{}, cp)
		if err != nil {
			return err
		}
		progress := newReplayProgress(errOut, []string{name}, n)
		progress.names = "verify " + name
		var shown time.Time
		res, err := postgres.VerifyProjection(ctx, pool, store, proj, postgres.VerifyOptions{
			BatchSize: batchSize, Sample: sample,
			Progress: func(done int64) {
				if time.Since(shown) >= progress.every {
					progress.update(done)
					shown = time.Now()
				}
			},
		})
		if err != nil {
			return fmt.Errorf("verify %s: %w", name, err)
		}
		progress.finish(res.Events)
		total += res.Events
		if len(res.Diffs) == 0 {
			fmt.Fprintf(out, "%s: ok, %d events up to %s\n", name, res.Events, res.Checkpoint)
			continue
		}
		differs = true
		fmt.Fprintf(out, "%s: DIFFERS from a rebuild of %d events up to %s\n", name, res.Events, res.Checkpoint)
		for _, d := range res.Diffs {
			printRows(out, d.Table, "only in live", d.OnlyLive, d.OnlyLiveCount)
			printRows(out, d.Table, "missing from live", d.OnlyRebuild, d.OnlyRebuildCount)
		}
	}
	elapsed := time.Since(start).Round(time.Millisecond)
	if differs {
		fmt.Fprintf(out, "verified %s: differences found (%d events checked in %s)\n", strings.Join(names, ", "), total, elapsed)
		return errVerifyDiffers
	}
	fmt.Fprintf(out, "verified %s: no difference, %d events checked in %s\n", strings.Join(names, ", "), total, elapsed)
	return nil
}

// printRows prints a table's rows found on one side only, and how many more were not shown.
func printRows(w io.Writer, table, side string, rows []string, count int64) {
	if count == 0 {
		return
	}
	fmt.Fprintf(w, "  %s: %d row(s) %s\n", table, count, side)
	for _, r := range rows {
		fmt.Fprintf(w, "    %s\n", r)
	}
	if more := count - int64(len(rows)); more > 0 {
		fmt.Fprintf(w, "    ... and %d more\n", more)
	}
}

// readGroupCheckpoint reads a consumer group's checkpoint (zero without an offsets row), to size the
// progress display; verify itself reads it again under the group's lock.
func readGroupCheckpoint(ctx context.Context, pool *pgxpool.Pool, name string) (events.Position, error) {
	s, err := postgres.ProjectionStatus(ctx, pool, name)
	if err != nil {
		return events.Position{}, err
	}
	return events.ParsePosition(s.Checkpoint)
}
