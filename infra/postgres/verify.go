package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
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
	// BatchSize is the number of events read and applied per round trip (default 1000).
	BatchSize int
	// Sample bounds the rows returned per table and direction (default 20).
	Sample int
	// Progress, when set, is called with the number of events applied so far.
	Progress func(applied int64)
}

// VerifyProjection rebuilds proj from the log into scratch tables and diffs them against its live tables.
// It holds the consumer group's offsets row locked for the whole run (a live subscriber waits between
// batches), rebuilds up to that checkpoint in a scratch schema put first on the search_path, and rolls
// everything back at the end: nothing it does is left behind.
func VerifyProjection(ctx context.Context, pool *pgxpool.Pool, store *EventStore, proj Projection, opts VerifyOptions) (VerifyResult, error) {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 1000
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
	tx, err := conn.Begin(ctx)
	if err != nil {
		return res, err
	}
	defer func() { _ = tx.Rollback(context.Background()) }()

	if _, err := tx.Exec(ctx, `SELECT 1 FROM events_offsets WHERE consumer_group = $1 FOR UPDATE`, proj.Name()); err != nil {
		return res, fmt.Errorf("lock %s: %w", proj.Name(), err)
	}
	if res.Checkpoint, err = readCheckpoint(ctx, tx, proj.Name()); err != nil {
		return res, err
	}
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	schema := "verify_" + hex.EncodeToString(suffix[:])
	scratch := pgx.Identifier{schema}.Sanitize()
	if _, err := tx.Exec(ctx, `CREATE SCHEMA `+scratch); err != nil {
		return res, fmt.Errorf("create scratch schema: %w", err)
	}
	for _, t := range proj.Tables() {
		if _, err := tx.Exec(ctx, `CREATE TABLE `+pgx.Identifier{schema, t}.Sanitize()+` (LIKE `+pgx.Identifier{"public", t}.Sanitize()+` INCLUDING ALL)`); err != nil {
			return res, fmt.Errorf("create scratch table %s: %w", t, err)
		}
	}
	if _, err := tx.Exec(ctx, `SET LOCAL search_path = `+scratch+`, public`); err != nil {
		return res, fmt.Errorf("set search_path: %w", err)
	}

	after := events.Position{}
	for after.Less(res.Checkpoint) {
		envs, err := store.ReadLog(ctx, after, "", opts.BatchSize)
		if err != nil {
			return res, err
		}
		if len(envs) == 0 {
			return res, fmt.Errorf("verify %s: the log ends at %s before the checkpoint %s", proj.Name(), after, res.Checkpoint)
		}
		b := &pgx.Batch{}
		for _, env := range envs {
			if res.Checkpoint.Less(env.Position) {
				break
			}
			if err := proj.Apply(b, env); err != nil {
				return res, fmt.Errorf("apply %s %s (position %s): %w", env.Type, env.ID, env.Position, err)
			}
			after = env.Position
			res.Events++
		}
		if b.Len() > 0 {
			if err := tx.SendBatch(ctx, b).Close(); err != nil {
				return res, fmt.Errorf("rebuild %s up to %s: %w", proj.Name(), after, err)
			}
		}
		if opts.Progress != nil {
			opts.Progress(res.Events)
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
