package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

// VerifyProjection rebuilds proj from the log into scratch tables and diffs them against its live tables.
// The rebuild runs in short transactions (one per batch, as replay's) into unlogged tables of a scratch
// schema put first on the search_path of a connection of its own, up to the live checkpoint as it was
// when it started. Only the end holds the consumer group's lock (a live subscriber waits meanwhile):
// it applies what the live projection applied since, then diffs. A transaction open for the whole
// rebuild would hold back every log reader of the cluster (their visibility rule waits for the oldest
// running writer) and make each batch walk the row versions of all the ones before it. The scratch
// schema is dropped at the end, whatever happens.
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
	// The search_path changes on this connection: take it out of the pool and close it at the end, so no
	// statement prepared against the scratch tables is ever reused.
	conn := pooled.Hijack()
	defer func() { _ = conn.Close(context.Background()) }()
	schema, err := createScratch(ctx, conn, proj.Tables())
	if schema != "" {
		defer func() {
			_, _ = conn.Exec(context.WithoutCancel(ctx), `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
		}()
	}
	if err != nil {
		return res, err
	}

	target, err := readCheckpoint(ctx, pool, proj.Name())
	if err != nil {
		return res, err
	}
	reader := startLogReader(ctx, pool, store.registry, events.Position{}, opts.BatchSize)
	defer reader.stop()
	var held []events.Envelope // read past the target, kept for the end
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
	keep := newUpkeep([]Projection{proj}, opts.BatchSize)
	for res.Checkpoint.Less(target) {
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return step(tx, target) }); err != nil {
			return res, err
		}
		// On conn, whose search_path finds the scratch tables first.
		if err := keep.after(ctx, conn, res.Events); err != nil {
			return res, err
		}
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		return res, err
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, `SELECT 1 FROM public.events_offsets WHERE consumer_group = $1 FOR UPDATE`, proj.Name()); err != nil {
		return res, fmt.Errorf("lock %s: %w", proj.Name(), err)
	}
	live, err := readCheckpoint(ctx, tx, proj.Name())
	if err != nil {
		return res, err
	}
	if live.Less(target) {
		return res, fmt.Errorf("verify %s: the projection was reset while it was verified (checkpoint %s, was %s); verify again once it has caught up", proj.Name(), live, target)
	}
	for res.Checkpoint.Less(live) {
		if err := step(tx, live); err != nil {
			return res, err
		}
	}
	for _, t := range proj.Tables() {
		live, rebuilt := pgx.Identifier{"public", t}.Sanitize(), pgx.Identifier{schema, t}.Sanitize()
		d := TableDiff{Table: t}
		if d.OnlyLive, d.OnlyLiveCount, err = exceptRows(ctx, tx, live, rebuilt, opts.Sample); err != nil {
			return res, fmt.Errorf("diff %s: %w", t, err)
		}
		if d.OnlyRebuild, d.OnlyRebuildCount, err = exceptRows(ctx, tx, rebuilt, live, opts.Sample); err != nil {
			return res, fmt.Errorf("diff %s: %w", t, err)
		}
		if d.OnlyLiveCount > 0 || d.OnlyRebuildCount > 0 {
			res.Diffs = append(res.Diffs, d)
		}
	}
	res.Elapsed = time.Since(start)
	return res, tx.Rollback(ctx)
}

// createScratch creates a schema holding an empty unlogged copy of each table and puts it first on
// conn's search_path. It returns the schema's name once it exists, also with an error.
func createScratch(ctx context.Context, conn *pgx.Conn, tables []string) (string, error) {
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	schema := "verify_" + hex.EncodeToString(suffix[:])
	scratch := pgx.Identifier{schema}.Sanitize()
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+scratch); err != nil {
		return "", fmt.Errorf("create scratch schema: %w", err)
	}
	for _, t := range tables {
		if _, err := conn.Exec(ctx, `CREATE UNLOGGED TABLE `+pgx.Identifier{schema, t}.Sanitize()+` (LIKE `+pgx.Identifier{"public", t}.Sanitize()+` INCLUDING ALL)`); err != nil {
			return schema, fmt.Errorf("create scratch table %s: %w", t, err)
		}
	}
	if _, err := conn.Exec(ctx, `SET search_path = `+scratch+`, public`); err != nil {
		return schema, fmt.Errorf("set search_path: %w", err)
	}
	return schema, nil
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
