package postgres_test

import (
	"context"
	"testing"

	"github.com/google/uuid"

	. "taki/infra/postgres"
	"taki/infra/postgres/pgtest"
)

// Migration 7 turns stored unread counts into excluded counts (unread = last_seq - last_read_seq -
// excluded_count) on a database that has chats, and back on the way down: no read model has to be
// replayed for an upgrade or a rollback.
func TestMigrationOfUnreadCountsToExcludedCounts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t, pgtest.NewDatabase(t))
	m, err := NewMigrator(pool)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if res, err := m.Down(ctx); err != nil || res.Source.Version != 7 {
		t.Fatalf("down: %+v, %v; want migration 7 rolled back", res, err)
	}
	chat, ann, bob := uuid.New(), uuid.New(), uuid.New()
	if _, err := pool.Exec(ctx, `INSERT INTO chats (id, type, title, created_at, last_seq, last_activity_at)
		VALUES ($1, 'group', 'g', now(), 10, now())`, chat); err != nil {
		t.Fatal(err)
	}
	// ann read up to 4 with 3 unread (her own and deleted messages make up the other 3 above 4); bob
	// read everything.
	if _, err := pool.Exec(ctx, `INSERT INTO chat_members (chat_id, user_id, role, last_read_seq, unread_count)
		VALUES ($1, $2, 'admin', 4, 3), ($1, $3, 'member', 10, 0)`, chat, ann, bob); err != nil {
		t.Fatal(err)
	}

	if _, err := m.Up(ctx); err != nil {
		t.Fatal(err)
	}
	unread := func(user uuid.UUID, column string) (n int64) {
		t.Helper()
		q := `SELECT ` + column + ` FROM chat_members m JOIN chats c ON c.id = m.chat_id WHERE m.chat_id = $1 AND m.user_id = $2`
		if err := pool.QueryRow(ctx, q, chat, user).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	const derived = `c.last_seq - m.last_read_seq - m.excluded_count`
	if a, b, ex := unread(ann, derived), unread(bob, derived), unread(ann, "m.excluded_count"); a != 3 || b != 0 || ex != 3 {
		t.Fatalf("after up: unread ann %d, bob %d, ann's excluded %d; want 3, 0, 3", a, b, ex)
	}

	// During a rolling deploy, older binaries still read unread_count (0 from now on, as a rebuild
	// leaves it); their projection writes are refused, so a chats projection they lead stops instead of
	// drifting from excluded_count. These are the statements of the chats projection before migration 7.
	if a := unread(ann, "m.unread_count"); a != 0 {
		t.Fatalf("unread_count after the migration: %d, want 0", a)
	}
	for _, old := range []string{
		// message.sent in a chat of one member: only the message and the chat are written.
		`WITH msg AS (
				INSERT INTO chat_messages (chat_id, seq, id, sender_id, text, client_msg_id, sent_at)
				SELECT $1, 11, gen_random_uuid(), gen_random_uuid(), 'x', NULL, now() FROM chats WHERE id = $1 AND last_seq < 11
				ON CONFLICT DO NOTHING)
			UPDATE chats SET last_seq = 11 WHERE id = $1 AND last_seq < 11`,
		`UPDATE chat_members SET unread_count = unread_count + 1 WHERE chat_id = $1`,
		`UPDATE chat_members SET last_read_seq = 10, unread_count = 0 WHERE chat_id = $1`,
		`INSERT INTO chat_members (chat_id, user_id, role, last_read_seq, unread_count) VALUES ($1, gen_random_uuid(), 'member', 10, 0)`,
	} {
		if _, err := pool.Exec(ctx, old, chat); err == nil {
			t.Fatalf("an older binary's %q was not refused", old)
		}
	}
	var lastSeq int64
	if err := pool.QueryRow(ctx, `SELECT last_seq FROM chats WHERE id = $1`, chat).Scan(&lastSeq); err != nil || lastSeq != 10 {
		t.Fatalf("last_seq %d, %v: a refused statement changed the chat", lastSeq, err)
	}
	// This version's writes pass.
	for _, ok := range []string{
		`UPDATE chat_members SET excluded_count = excluded_count + 1, last_read_seq = last_read_seq WHERE chat_id = $1`,
		`UPDATE chat_members SET excluded_count = excluded_count - 1 WHERE chat_id = $1`,
		`INSERT INTO chat_members (chat_id, user_id, role, last_read_seq, excluded_count) VALUES ($1, gen_random_uuid(), 'member', 10, 0)`,
		`INSERT INTO chat_messages (chat_id, seq, id, sender_id, text, sent_at, format) VALUES ($1, 11, gen_random_uuid(), gen_random_uuid(), 'x', now(), 'plain')`,
	} {
		if _, err := pool.Exec(ctx, ok, chat); err != nil {
			t.Fatalf("%q: %v", ok, err)
		}
	}

	if _, err := m.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if a, b := unread(ann, "m.unread_count"), unread(bob, "m.unread_count"); a != 3 || b != 0 {
		t.Fatalf("after down: unread ann %d, bob %d; want 3 and 0", a, b)
	}
	if _, err := m.Up(ctx); err != nil {
		t.Fatal(err)
	}
}
