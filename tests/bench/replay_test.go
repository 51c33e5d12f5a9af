package main

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"taki/events"
	"taki/infra/postgres"
	"taki/projections"
)

func TestReplayGen(t *testing.T) {
	const total = 30_000
	g := newReplayGen(total, 1)
	var rows []logRow
	for {
		n := len(rows)
		rows = g.Next(rows, 7_000)
		if len(rows) == n {
			break
		}
	}
	if len(rows) != total {
		t.Fatalf("%d events, want %d", len(rows), total)
	}
	versions := map[uuid.UUID]int64{}
	seqs := map[uuid.UUID]int64{}
	types := map[string]int{}
	var last time.Time
	for i, r := range rows {
		types[r.Data.EventType()]++
		if versions[r.StreamID]++; r.Version != versions[r.StreamID] {
			t.Fatalf("event %d (%s): stream %s at version %d, want %d", i, r.Data.EventType(), r.StreamID, r.Version, versions[r.StreamID])
		}
		if !r.OccurredAt.After(last) {
			t.Fatalf("event %d at %s, not after %s", i, r.OccurredAt, last)
		}
		last = r.OccurredAt
		if _, err := encodeEvent(r.Data); err != nil {
			t.Fatal(err)
		}
		if m, ok := r.Data.(events.MessageSent); ok {
			if seqs[m.ChatID]++; m.Seq != seqs[m.ChatID] || r.StreamID != m.ChatID {
				t.Fatalf("event %d: message seq %d of chat %s, want %d", i, m.Seq, m.ChatID, seqs[m.ChatID])
			}
		}
	}
	// Every kind of event each projection applies is in the mix.
	for _, typ := range []string{"user.registered", "user.logged_in", "user.profile_updated", "chat.created", "message.sent",
		"chat.read", "message.edited", "message.deleted", "payment.requested", "payment.pending", "payment.completed",
		"payment.failed", "refund.requested", "refund.completed", "refund.failed"} {
		if types[typ] == 0 {
			t.Errorf("no %s in %v", typ, types)
		}
	}
	if sent := types["message.sent"]; sent < total*9/10 {
		t.Errorf("%d message.sent of %d events", sent, total)
	}
	w := g.Want()
	if w.Users != 60 || len(w.LastSeq) != 30 || w.Messages != types["message.sent"] || w.Deleted != types["message.deleted"] {
		t.Errorf("want %d users, %d chats, %d messages, %d deleted; mix %v", w.Users, len(w.LastSeq), w.Messages, w.Deleted, types)
	}
	if g.MixString() == "" {
		t.Error("no mix")
	}
}

func TestParseReplayLine(t *testing.T) {
	r, err := parseReplayLine("some progress\nreplayed users, chats, payments: 1000000 events up to 812.10000 in 9.876s (101255 events/s)\n")
	if err != nil {
		t.Fatal(err)
	}
	if r.Events != 1_000_000 || r.Reported != "9.876s" || r.ReportedRate != 101255 {
		t.Errorf("parsed %+v", r)
	}
	if _, err := parseReplayLine("replay failed\n"); err == nil {
		t.Error("parsed a line that is not replay's")
	}
}

// TestReplayReadModels applies a small generated log, as read back from the events table, with the
// projections replay rebuilds (in process, in batches as catch-up applies them), and checks the read
// models against what the generator expects, and that the check notices a gap. It applies the batches
// itself rather than through postgres.CatchUp, whose visibility rule waits for every transaction open
// on the cluster (other packages' tests run beside this one).
func TestReplayReadModels(t *testing.T) {
	env, conn := testConn(t)
	ctx := context.Background()
	const total = 8_000
	g := newReplayGen(total, 2)
	if err := loadReplayLog(ctx, conn, g, 1_000); err != nil {
		t.Fatal(err)
	}
	pool, err := postgres.Connect(ctx, env.DatabaseURL, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	users, err := projections.NewUsers(pool)
	if err != nil {
		t.Fatal(err)
	}
	chats, err := projections.NewChats(pool)
	if err != nil {
		t.Fatal(err)
	}
	payments, err := projections.NewPayments(pool)
	if err != nil {
		t.Fatal(err)
	}

	rows, err := conn.Query(ctx, `SELECT event_type, schema_version, stream_id, stream_type, version, occurred_at, payload::text
		FROM events ORDER BY transaction_id, "offset"`)
	if err != nil {
		t.Fatal(err)
	}
	reg := events.NewRegistry()
	var envs []events.Envelope
	var e events.Envelope
	var payload []byte
	if _, err := pgx.ForEachRow(rows, []any{&e.Type, &e.SchemaVersion, &e.StreamID, &e.StreamType, &e.Version, &e.OccurredAt, &payload},
		func() error {
			data, err := reg.Decode(e.Type, e.SchemaVersion, payload)
			e.Data = data
			envs = append(envs, e)
			return err
		}); err != nil {
		t.Fatal(err)
	}
	if len(envs) != total {
		t.Fatalf("read %d events back, want %d", len(envs), total)
	}
	type bulk interface {
		ApplyAll(*pgx.Batch, []events.Envelope) error
	}
	for from := 0; from < total; from += 500 {
		batch := envs[from:min(total, from+500)]
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			b := &pgx.Batch{}
			for _, p := range []postgres.Projection{users, chats, payments} {
				if bp, ok := p.(bulk); ok {
					if err := bp.ApplyAll(b, batch); err != nil {
						return err
					}
					continue
				}
				for _, e := range batch {
					if err := p.Apply(b, e); err != nil {
						return err
					}
				}
			}
			return tx.SendBatch(ctx, b).Close()
		}); err != nil {
			t.Fatalf("apply events %d..: %v", from, err)
		}
	}

	want := g.Want()
	if err := checkReplayReadModels(ctx, conn, want); err != nil {
		t.Fatal(err)
	}
	// The floor copies every message row and leaves nothing behind.
	took, copied, err := messagesCopyFloor(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	var messages int64
	var left bool
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM chat_messages), to_regclass('copy_floor') IS NOT NULL`).Scan(&messages, &left); err != nil {
		t.Fatal(err)
	}
	if copied != messages || messages == 0 || took <= 0 || left {
		t.Errorf("floor copied %d of %d message rows in %s; its table left behind: %v", copied, messages, took, left)
	}
	if _, err := conn.Exec(ctx, `DELETE FROM chat_messages WHERE seq = 2`); err != nil {
		t.Fatal(err)
	}
	if err := checkReplayReadModels(ctx, conn, want); err == nil {
		t.Error("the check passed with messages missing")
	}
}
