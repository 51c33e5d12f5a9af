package postgres

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/events"
)

// TableDiff is how one table of a live read model differs from a fresh rebuild.
type TableDiff struct {
	Table string
	// OnlyLive are rows (as JSON) the live table holds and the rebuild does not; OnlyLiveCount counts them all.
	OnlyLive      []string
	OnlyLiveCount int64
	// OnlyRebuild are rows (as JSON) the rebuild holds and the live table does not.
	OnlyRebuild      []string
	OnlyRebuildCount int64
}

// VerifyResult is the outcome of VerifyProjection.
type VerifyResult struct {
	Name       string
	Checkpoint events.Position
	Events     int64
	Elapsed    time.Duration
	// Diffs lists only the tables that differ.
	Diffs []TableDiff
}

// VerifyOptions tunes VerifyProjection.
type VerifyOptions struct {
	// BatchSize is the number of events read and applied per round trip (default 5000).
	BatchSize int
	// Sample bounds the rows returned per table and direction (default 20).
	Sample int
	// Progress, when set, is called with the number of events applied so far.
	Progress func(applied int64)
}

// verifyAttempts bounds how many times verify tries to meet the live projection in a snapshot before
// it holds the consumer group's lock to do so (a variable for tests).
var verifyAttempts = 20

// VerifyProjection rebuilds proj from the log into scratch tables and diffs them against its live tables.
//
// The scratch tables are temporary tables of a connection of its own (unlogged, found before the live
// ones by unqualified names, gone with the session however it ends). The rebuild runs in short
// transactions, one per batch as replay's, up to the live checkpoint, read again until the rebuild and
// the live projection meet in one read-only snapshot, where the two are compared: the live projection
// is neither locked nor held back, and the comparison holds back no log reader (a read-only
// transaction takes no transaction id). A transaction open for the whole rebuild would hold back every
// log reader of the cluster, whose visibility rule waits for the oldest running writer, and make each
// batch walk the row versions of all the ones before it. Only if the live projection moves on every
// time does verify take the consumer group's lock for the last events and the comparison.
func VerifyProjection(ctx context.Context, pool *pgxpool.Pool, store *EventStore, proj Projection, opts VerifyOptions) (VerifyResult, error) {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 5000
	}
	if opts.Sample <= 0 {
		opts.Sample = 20
	}
	start := time.Now()
	res := VerifyResult{Name: proj.Name()}
	pooled, err := pool.Acquire(ctx)
	if err != nil {
		return res, err
	}
	// The temporary tables shadow the live ones on this connection: take it out of the pool and close
	// it at the end, which drops them, so no statement prepared against them is ever reused.
	conn := pooled.Hijack()
	defer func() { _ = conn.Close(context.Background()) }()
	for _, t := range proj.Tables() {
		if _, err := conn.Exec(ctx, `CREATE TEMPORARY TABLE `+pgx.Identifier{t}.Sanitize()+` (LIKE `+pgx.Identifier{"public", t}.Sanitize()+` INCLUDING ALL)`); err != nil {
			return res, fmt.Errorf("create scratch table %s: %w", t, err)
		}
		// Dropped now rather than when the closed session's backend gets to it; if the connection
		// broke, the session's end drops it all the same.
		defer func() {
			_, _ = conn.Exec(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS `+pgx.Identifier{"pg_temp", t}.Sanitize())
		}()
	}

	reader := startLogReader(ctx, pool, store.registry, events.Position{}, opts.BatchSize)
	defer reader.stop()
	var held []events.Envelope // read past where the rebuild is, kept for later
	// step applies on q the next batch of the log, up to to at most.
	step := func(q pgx.Tx, to events.Position) error {
		if len(held) == 0 {
			select {
			case batch := <-reader.batches:
				if batch.err != nil {
					return batch.err
				}
				held = batch.envs
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		n := sort.Search(len(held), func(i int) bool { return to.Less(held[i].Position) })
		if n == 0 {
			return fmt.Errorf("verify %s: the log has no event at %s (rebuilt up to %s)", proj.Name(), to, res.Checkpoint)
		}
		b := &pgx.Batch{}
		if err := applyAll(b, proj, held[:n]); err != nil {
			return fmt.Errorf("verify %s: %w", proj.Name(), err)
		}
		if err := q.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("rebuild %s up to %s: %w", proj.Name(), held[n-1].Position, err)
		}
		res.Checkpoint = held[n-1].Position
		res.Events += int64(n)
		held = held[n:]
		if opts.Progress != nil {
			opts.Progress(res.Events)
		}
		return nil
	}
	// rebuildTo applies, on q, the log up to to, from where the rebuild is.
	rebuildTo := func(q pgx.Tx, to events.Position) error {
		for res.Checkpoint.Less(to) {
			if err := step(q, to); err != nil {
				return err
			}
		}
		return nil
	}
	// rewound refuses a live checkpoint behind the rebuild: the projection was reset meanwhile.
	rewound := func(live events.Position) error {
		if live.Less(res.Checkpoint) {
			return fmt.Errorf("verify %s: the projection was reset while it was verified (checkpoint %s, rebuilt up to %s); verify again once it has caught up", proj.Name(), live, res.Checkpoint)
		}
		return nil
	}
	keep := newUpkeep([]Projection{proj}, opts.BatchSize)
	for attempt := 1; ; attempt++ {
		live, err := readCheckpoint(ctx, pool, proj.Name())
		if err != nil {
			return res, err
		}
		if err := rewound(live); err != nil {
			return res, err
		}
		for res.Checkpoint.Less(live) {
			if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return step(tx, live) }); err != nil {
				return res, err
			}
			// On conn, where the scratch tables are the ones found.
			if err := keep.after(ctx, conn, res.Events); err != nil {
				return res, err
			}
		}
		locked := attempt == verifyAttempts
		txOpts := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
		if locked {
			txOpts = pgx.TxOptions{}
		}
		tx, err := conn.BeginTx(ctx, txOpts)
		if err != nil {
			return res, err
		}
		met, err := compareAt(ctx, tx, proj, locked, &res, rewound, rebuildTo, opts.Sample)
		_ = tx.Rollback(context.WithoutCancel(ctx))
		if err != nil || met {
			res.Elapsed = time.Since(start)
			return res, err
		}
	}
}

// compareAt diffs the live tables with the rebuild in tx if the live checkpoint there is where the
// rebuild is (met), or, when locked, after locking the consumer group and applying what the live
// projection applied since.
func compareAt(ctx context.Context, tx pgx.Tx, proj Projection, locked bool, res *VerifyResult,
	rewound func(events.Position) error, rebuildTo func(pgx.Tx, events.Position) error, sample int) (met bool, err error) {
	if locked {
		if _, err := tx.Exec(ctx, `SELECT 1 FROM public.events_offsets WHERE consumer_group = $1 FOR UPDATE`, proj.Name()); err != nil {
			return false, fmt.Errorf("lock %s: %w", proj.Name(), err)
		}
	}
	live, err := readCheckpoint(ctx, tx, proj.Name())
	if err != nil {
		return false, err
	}
	if err := rewound(live); err != nil {
		return false, err
	}
	if live != res.Checkpoint {
		if !locked {
			return false, nil
		}
		if err := rebuildTo(tx, live); err != nil {
			return false, err
		}
	}
	for _, t := range proj.Tables() {
		live, rebuilt := pgx.Identifier{"public", t}.Sanitize(), pgx.Identifier{"pg_temp", t}.Sanitize()
		d := TableDiff{Table: t}
		if d.OnlyLive, d.OnlyLiveCount, err = exceptRows(ctx, tx, live, rebuilt, sample); err != nil {
			return false, fmt.Errorf("diff %s: %w", t, err)
		}
		if d.OnlyRebuild, d.OnlyRebuildCount, err = exceptRows(ctx, tx, rebuilt, live, sample); err != nil {
			return false, fmt.Errorf("diff %s: %w", t, err)
		}
		if d.OnlyLiveCount > 0 || d.OnlyRebuildCount > 0 {
			res.Diffs = append(res.Diffs, d)
		}
	}
	return true, nil
}

// exceptRows returns up to limit rows of a EXCEPT ALL b as JSON, in a stable order, and their count.
func exceptRows(ctx context.Context, tx pgx.Tx, a, b string, limit int) ([]string, int64, error) {
	rows, err := tx.Query(ctx, `SELECT to_jsonb(r)::text, count(*) OVER () FROM (SELECT * FROM `+a+` EXCEPT ALL SELECT * FROM `+b+`) r
		ORDER BY 1 LIMIT $1`, limit)
	if err != nil {
		return nil, 0, err
	}
	var out []string
	var n int64
	for rows.Next() {
		var s string
		if err := rows.Scan(&s, &n); err != nil {
			rows.Close()
			return nil, 0, err
		}
		out = append(out, s)
	}
	return out, n, rows.Err()
}
