package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"taki/infra/postgres/pgtest"
)

// testEnv is an Env on a fresh migrated test database (migrated by the test helper, not the binary).
func testEnv(t *testing.T) *Env {
	t.Helper()
	return &Env{
		Config:       Config{Clients: 4, Duration: 300 * time.Millisecond, Log: io.Discard, CatchUpTimeout: time.Second},
		DatabaseURL:  pgtest.NewDatabase(t),
		DatabaseName: "test",
	}
}

// testConn is testEnv and a connection to its database, closed when the test ends.
func testConn(t *testing.T) (*Env, *pgx.Conn) {
	t.Helper()
	env := testEnv(t)
	conn, err := env.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return env, conn
}

func TestInsertBaseline(t *testing.T) {
	env := testEnv(t)
	ctx := context.Background()
	st, err := insertBaseline(ctx, env, LoadPhase{Workers: 4, Warmup: 100 * time.Millisecond, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if st.Ops == 0 || st.Latencies.Len() == 0 {
		t.Fatalf("no inserts counted: %+v", st)
	}
	conn, err := env.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var rows, streams, minLen int
	if err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT stream_id), min(octet_length(payload::text)) FROM bench_baseline`).
		Scan(&rows, &streams, &minLen); err != nil {
		t.Fatal(err)
	}
	if rows < st.Ops || streams != 4 || minLen < 140 {
		t.Errorf("%d rows (counted %d), %d streams, shortest payload %d bytes", rows, st.Ops, streams, minLen)
	}
}

func TestLoadAndScanLog(t *testing.T) {
	env, conn := testConn(t)
	ctx := context.Background()
	const total = 12_345
	stats, err := loadUserLog(ctx, conn, total)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Events != total {
		t.Fatalf("stats %+v", stats)
	}
	// Consumption order is the generation order: every stream's versions rise along (transaction_id,
	// offset), and chunks are separate transactions.
	var disorder, txs int
	if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE version <> prev + 1) FROM (
			SELECT version, COALESCE(lag(version) OVER (PARTITION BY stream_id ORDER BY transaction_id, "offset"), 0) AS prev
			FROM events) s`).Scan(&disorder); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(DISTINCT transaction_id) FROM events`).Scan(&txs); err != nil {
		t.Fatal(err)
	}
	if disorder != 0 || txs != (total+loadChunk-1)/loadChunk {
		t.Errorf("%d events out of stream order, %d transactions", disorder, txs)
	}
	last, err := lastPosition(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if last.Offset != total || last.TxID == "" {
		t.Errorf("last position %+v", last)
	}
	rate, err := scanBaseline(ctx, conn, total)
	if err != nil || rate <= 0 {
		t.Fatalf("scan: %v, %v", rate, err)
	}

	if _, ok, err := consumerPosition(ctx, conn); ok || err != nil {
		t.Fatalf("fresh database has a users offset (%v, %v)", ok, err)
	}
	if n, err := eventsAfterConsumer(ctx, conn); n != total || err != nil {
		t.Errorf("events after a missing offset: %d, %v", n, err)
	}
	// Pretend the users group committed the position of the 10th event.
	if _, err := conn.Exec(ctx, `INSERT INTO events_offsets (consumer_group, offset_acked, last_processed_transaction_id)
		SELECT 'users', "offset", transaction_id FROM events ORDER BY transaction_id, "offset" OFFSET 9 LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	if n, err := eventsAfterConsumer(ctx, conn); n != total-10 || err != nil {
		t.Errorf("events after the 10th: %d, %v", n, err)
	}
	if _, err := conn.Exec(ctx, `UPDATE events_offsets SET offset_acked = $1, last_processed_transaction_id = $2::xid8`,
		last.Offset, last.TxID); err != nil {
		t.Fatal(err)
	}
	caught, err := waitCaughtUp(ctx, env, conn, &Server{done: make(chan struct{})}, last)
	if err != nil || caught.IsZero() {
		t.Errorf("waitCaughtUp at the last position: %v, %v", caught, err)
	}
	if err := checkUsersReadModel(ctx, conn, stats); err == nil {
		t.Error("an empty read model passed the check")
	}
}

func TestWaitCaughtUpGivesUp(t *testing.T) {
	env := testEnv(t)
	env.CatchUpTimeout = 200 * time.Millisecond
	ctx := context.Background()
	conn, err := env.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	begin := time.Now()
	_, err = waitCaughtUp(ctx, env, conn, &Server{done: make(chan struct{}), output: &cappedBuffer{limit: 10}}, logPosition{"1", 1})
	if err == nil || time.Since(begin) > 5*time.Second {
		t.Errorf("err %v after %s", err, time.Since(begin))
	}
	exited := &Server{done: make(chan struct{}), output: &cappedBuffer{limit: 100}}
	_, _ = exited.output.Write([]byte("panic: boom\n"))
	close(exited.done)
	env.CatchUpTimeout = time.Minute
	// A fresh connection: pgx closes one whose query the timeout above interrupted.
	conn2, err := env.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close(ctx)
	if _, err := waitCaughtUp(ctx, env, conn2, exited, logPosition{"1", 1}); err == nil || !strings.Contains(err.Error(), "panic: boom") {
		t.Errorf("server exit: %v", err)
	}
}
