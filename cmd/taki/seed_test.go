package main

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"taki/infra/postgres"
	"taki/infra/postgres/pgtest"
	"taki/queries"
	"taki/tests/testserver"
)

// seedCounts is what the log and the read models hold after seeding.
type seedCounts struct {
	users, chats, messages int
}

func logCounts(t *testing.T, db string) seedCounts {
	t.Helper()
	var c seedCounts
	pool := pgtest.NewPool(t, db)
	defer pool.Close()
	err := pool.QueryRow(context.Background(), `SELECT
		count(*) FILTER (WHERE event_type = 'user.registered'),
		count(*) FILTER (WHERE event_type = 'chat.created'),
		count(*) FILTER (WHERE event_type = 'message.sent') FROM events`).Scan(&c.users, &c.chats, &c.messages)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readModelCounts(t *testing.T, db string) seedCounts {
	t.Helper()
	var c seedCounts
	pool := pgtest.NewPool(t, db)
	defer pool.Close()
	err := pool.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM user_profiles), (SELECT count(*) FROM chats), (SELECT count(*) FROM chat_messages)`).
		Scan(&c.users, &c.chats, &c.messages)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// seqGaps counts the chats whose seqs are not exactly 1..n, in the log and in the read model, and the
// chats whose last_seq is not their message count.
func seqGaps(t *testing.T, db string) (inLog, inReadModel, lastSeq int) {
	t.Helper()
	pool := pgtest.NewPool(t, db)
	defer pool.Close()
	ctx := context.Background()
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM (
		SELECT stream_id FROM events WHERE event_type = 'message.sent'
		GROUP BY stream_id
		HAVING min((payload->>'seq')::bigint) <> 1 OR max((payload->>'seq')::bigint) <> count(*)
			OR count(DISTINCT (payload->>'seq')::bigint) <> count(*)) g`).Scan(&inLog); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM (
		SELECT chat_id FROM chat_messages GROUP BY chat_id
		HAVING min(seq) <> 1 OR max(seq) <> count(*)) g`).Scan(&inReadModel); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM chats c
		WHERE c.last_seq <> (SELECT count(*) FROM chat_messages m WHERE m.chat_id = c.id)`).Scan(&lastSeq); err != nil {
		t.Fatal(err)
	}
	return inLog, inReadModel, lastSeq
}

var seedSummary = regexp.MustCompile(`(?m)^seeded run ([0-9a-f]{8}) in \S+: (\d+) users, (\d+) chats \((\d+) groups, (\d+) direct\), (\d+) messages \(\d+ messages/s\)$`)

func TestSeedCreatesRealEventsAndReadModels(t *testing.T) {
	db := pgtest.NewDatabase(t)
	useDatabase(t, db)
	// A running server: seed's events wake its projections, which build the read models.
	srv := testserver.Start(t, db)

	args := []string{"seed", "--users", "12", "--chats", "8", "--messages", "150", "--group-size", "4", "--workers", "8"}
	out := mustTaki(t, args...)
	m := seedSummary.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no summary line in:\n%s", out)
	}
	if got := strings.Join(m[2:], " "); got != "12 8 6 2 150" {
		t.Errorf("summary counts %q, want 12 users, 8 chats (6 groups, 2 direct), 150 messages", got)
	}
	for _, want := range []string{"demo-" + m[1] + "-000001@example.com", "demo-" + m[1] + "-000012@example.com", "password of every demo user: taki-demo-password"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// Seeding again must not fail: a fresh run tag, another set beside the first.
	out2 := mustTaki(t, args...)
	m2 := seedSummary.FindStringSubmatch(out2)
	if m2 == nil || m2[1] == m[1] {
		t.Fatalf("second run: want a new run tag, got:\n%s", out2)
	}

	want := seedCounts{users: 24, chats: 16, messages: 300}
	if got := logCounts(t, db); got != want {
		t.Errorf("log holds %+v, want %+v", got, want)
	}
	head, err := srv.Store.LogHead(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{queries.UsersReadModel, queries.ChatsReadModel} {
		if ok, err := srv.Projector.WaitFor(context.Background(), name, head, time.Minute); err != nil || !ok {
			t.Fatalf("projection %s did not reach %s: %v", name, head, err)
		}
	}
	if got := readModelCounts(t, db); got != want {
		t.Errorf("read models hold %+v, want %+v", got, want)
	}
	if inLog, inReadModel, lastSeq := seqGaps(t, db); inLog+inReadModel+lastSeq != 0 {
		t.Errorf("chats with seq gaps: %d in the log, %d in the read model; %d with a wrong last_seq", inLog, inReadModel, lastSeq)
	}

	// A demo user logs in with the printed password.
	c := srv.Client(t)
	c.LogIn("demo-"+m[1]+"-000003@example.com", "taki-demo-password")
}

func TestSeedWithoutRunningServerThenReplay(t *testing.T) {
	db := pgtest.NewDatabase(t)
	useDatabase(t, db)
	mustTaki(t, "seed", "--users", "3", "--chats", "2", "--messages", "20", "--password", "another-secret")
	if got, want := logCounts(t, db), (seedCounts{users: 3, chats: 2, messages: 20}); got != want {
		t.Errorf("log holds %+v, want %+v", got, want)
	}
	// No server ran: the projections catch up when replayed.
	mustTaki(t, "projections", "replay", "all", "--yes")
	if got, want := readModelCounts(t, db), (seedCounts{users: 3, chats: 2, messages: 20}); got != want {
		t.Errorf("read models hold %+v, want %+v", got, want)
	}
	if inLog, inReadModel, lastSeq := seqGaps(t, db); inLog+inReadModel+lastSeq != 0 {
		t.Errorf("chats with seq gaps: %d in the log, %d in the read model; %d with a wrong last_seq", inLog, inReadModel, lastSeq)
	}
}

func TestSeedRefusesPendingMigrations(t *testing.T) {
	db := missingDatabase(t)
	if err := postgres.EnsureDatabase(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	useDatabase(t, db)
	_, err := taki(t, "seed", "--users", "2", "--chats", "1", "--messages", "1")
	if err == nil || !strings.Contains(err.Error(), "migrations pending: run `taki migrate up`") {
		t.Fatalf("seed on an unmigrated database: %v, want migrations pending", err)
	}
	if n := publicTables(t, db); n != 0 {
		t.Errorf("seed created %d tables", n)
	}
}

func TestSeedBadFlags(t *testing.T) {
	db := pgtest.NewDatabase(t)
	useDatabase(t, db)
	for _, tc := range []struct {
		args []string
		arg  string
	}{
		{[]string{"--users", "0"}, "--users"},
		{[]string{"--users", "-3"}, "--users"},
		{[]string{"--chats", "-1"}, "--chats"},
		{[]string{"--messages", "-1"}, "--messages"},
		{[]string{"--chats", "0", "--messages", "5"}, "--messages"},
		{[]string{"--group-size", "0"}, "--group-size"},
		{[]string{"--workers", "0"}, "--workers"},
		{[]string{"--password", "short"}, "--password"},
		{[]string{"extra"}, "extra"},
	} {
		_, err := taki(t, append([]string{"seed"}, tc.args...)...)
		var usage *usageErr
		if !errors.As(err, &usage) || usage.Arg != tc.arg {
			t.Errorf("seed %s: %v, want a usage error on %s", strings.Join(tc.args, " "), err, tc.arg)
		}
	}
	for _, args := range [][]string{{"--users", "many"}, {"--no-such-flag"}} {
		_, err := taki(t, append([]string{"seed"}, args...)...)
		var usage *usageErr
		if !errors.As(err, &usage) || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("seed %s: %v, want a usage error naming %s", strings.Join(args, " "), err, args[0])
		}
	}
	// Through main: one line on stderr, exit status 2.
	wantExit2(t, []string{"TAKI_MAIN_TEST_ARGS=seed --workers 0", "TAKI_LOG_LEVEL="}, "--workers")
	if got := logCounts(t, db); got != (seedCounts{}) {
		t.Errorf("bad flags appended %+v", got)
	}
}
