package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/commands"
	"taki/events"
	"taki/handlers"
	"taki/infra/bus"
	"taki/infra/config"
	"taki/infra/logging"
	"taki/infra/postgres"
	"taki/infra/postgres/pgtest"
	"taki/infra/server"
	"taki/queries"
	"taki/tests/testserver"
)

// takiWith runs the command line in-process with in as standard input, returning stdout and stderr.
func takiWith(t *testing.T, in io.Reader, args ...string) (string, string, error) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetIn(in)
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// idleServer wires a server on the test database whose background work (projections, process
// managers) never runs: commands sent through its bus only append to the log, and no background
// transaction holds back the visibility of what a test appends.
func idleServer(t *testing.T) *server.Server {
	t.Helper()
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(context.Background(), cfg, logging.Discard(), server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// seedLog appends users, chats, messages and, with payments, payment requests through the bus.
func seedLog(t *testing.T, b *bus.Bus, withPayments bool) {
	t.Helper()
	ctx := context.Background()
	send := func(cmd any) {
		t.Helper()
		if _, _, err := bus.Send[any](ctx, b, cmd); err != nil {
			t.Fatalf("%T: %v", cmd, err)
		}
	}
	users := make([]uuid.UUID, 4)
	for i := range users {
		users[i] = uuid.Must(uuid.NewV7())
		if _, _, err := bus.Send[queries.User](ctx, b, commands.RegisterUser{
			UserID: users[i], Email: fmt.Sprintf("replay-%d-%s@example.com", i, uuid.NewString()[:8]),
			Password: "correct horse battery", DisplayName: fmt.Sprintf("Replayer %d", i),
		}); err != nil {
			t.Fatal(err)
		}
	}
	send(commands.UpdateProfile{Actor: users[0], DisplayName: ptr("Renamed Replayer")})
	chat := uuid.Must(uuid.NewV7())
	send(commands.CreateGroupChat{Actor: users[0], ChatID: chat, Title: "Replay group", MemberIDs: users[1:3]})
	send(commands.AddChatMember{Actor: users[0], ChatID: chat, UserID: users[3]})
	send(commands.RenameChat{Actor: users[0], ChatID: chat, Title: "Replay group, renamed"})
	for i := range 30 {
		send(commands.SendMessage{Actor: users[i%4], ChatID: chat, Text: fmt.Sprintf("message %d", i), ClientMsgID: uuid.NewString()})
	}
	send(commands.RemoveChatMember{Actor: users[0], ChatID: chat, UserID: users[2]})
	if withPayments {
		for i := range 3 {
			send(commands.RequestPayment{Actor: users[i], PaymentID: uuid.Must(uuid.NewV7()), IdempotencyKey: uuid.NewString(),
				RequestHash: "h", AmountMinor: int64(100 * (i + 1)), Currency: "USD", SourceID: "cnon:card-nonce-ok", Description: "replay"})
		}
	}
}

func ptr[T any](v T) *T { return &v }

// readModelTables lists every projection's tables.
func readModelTables(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	var tables []string
	for _, name := range projectionNames {
		p, err := newProjection(name, pool)
		if err != nil {
			t.Fatal(err)
		}
		tables = append(tables, p.Tables()...)
	}
	return tables
}

// dumpReadModels prints every read-model row, table by table, in a stable order.
func dumpReadModels(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var b strings.Builder
	for _, table := range readModelTables(t, pool) {
		var rows string
		id := pgx.Identifier{table}.Sanitize()
		if err := pool.QueryRow(context.Background(), `SELECT count(*)::text || E'\n' || COALESCE(string_agg(r::text, E'\n' ORDER BY r::text), '') FROM `+id+` r`).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "== %s\n%s\n", table, rows)
	}
	return b.String()
}

func logHeadOf(t *testing.T, pool *pgxpool.Pool) events.Position {
	t.Helper()
	var tx string
	var off int64
	if err := pool.QueryRow(context.Background(), `SELECT e.transaction_id::text, e."offset" FROM events e ORDER BY e.transaction_id DESC, e."offset" DESC LIMIT 1`).Scan(&tx, &off); err != nil {
		t.Fatal(err)
	}
	p, err := events.ParsePosition(tx + "." + fmt.Sprint(off))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// buildLive applies the whole log with the live projector, as a server does, and stops it.
func buildLive(t *testing.T, srv *server.Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Projector.Run(ctx) }()
	head := logHeadOf(t, srv.Pool)
	for _, name := range projectionNames {
		if ok, err := srv.Projector.WaitFor(context.Background(), name, head, time.Minute); err != nil || !ok {
			cancel()
			t.Fatalf("live projection %s did not reach %s: %v", name, head, err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// builtServer is an idle server (see idleServer) on a database of its own holding seedLog's log, with
// every read model built from it.
func builtServer(t *testing.T, withPayments bool) *server.Server {
	t.Helper()
	useDatabase(t, pgtest.NewDatabase(t))
	srv := idleServer(t)
	seedLog(t, srv.Bus, withPayments)
	buildLive(t, srv)
	return srv
}

// assertCaughtUp checks that every projection's checkpoint is the log head.
func assertCaughtUp(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	for _, name := range projectionNames {
		s, err := postgres.ProjectionStatus(context.Background(), pool, name)
		if err != nil {
			t.Fatal(err)
		}
		if s.LagEvents != 0 {
			t.Errorf("%s: lag %d after replay, want 0", name, s.LagEvents)
		}
	}
}

func TestProjectionsReplayWithoutServer(t *testing.T) {
	srv := builtServer(t, true)
	before := dumpReadModels(t, srv.Pool)
	for _, table := range []string{"user_profiles", "chat_messages", "payments"} {
		if !strings.Contains(before, "== "+table+"\n") || strings.Contains(before, "== "+table+"\n0\n") {
			t.Fatalf("set-up: %s is empty:\n%s", table, before)
		}
	}

	// Damage the read models: a replay must not depend on what they hold.
	if _, err := srv.Pool.Exec(context.Background(), `UPDATE user_profiles SET display_name = 'wrong'`); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := takiWith(t, strings.NewReader(""), "projections", "replay", "users", "--yes")
	if err != nil {
		t.Fatalf("replay users: %v\n%s%s", err, out, stderr)
	}
	if !strings.HasPrefix(out, "replayed users: ") || !strings.Contains(out, "events/s") || strings.Count(out, "\n") != 1 {
		t.Errorf("replay users printed %q, want one line with the count, time and rate", out)
	}
	if got := dumpReadModels(t, srv.Pool); got != before {
		t.Errorf("after replay users the read models differ:\n%s\nwant\n%s", got, before)
	}
	assertCaughtUp(t, srv.Pool)

	out, stderr, err = takiWith(t, strings.NewReader(""), "projections", "replay", "all", "--yes", "--batch-size", "7")
	if err != nil {
		t.Fatalf("replay all: %v\n%s%s", err, out, stderr)
	}
	if !strings.HasPrefix(out, "replayed users, chats, payments: ") {
		t.Errorf("replay all printed %q", out)
	}
	if got := dumpReadModels(t, srv.Pool); got != before {
		t.Errorf("after replay all the read models differ:\n%s\nwant\n%s", got, before)
	}
	assertCaughtUp(t, srv.Pool)
}

// seededServer seeds a log on a database of its own, then starts a server on it whose projections
// have caught up with that log.
func seededServer(t *testing.T, withPayments bool) *testserver.Server {
	t.Helper()
	db := pgtest.NewDatabase(t)
	useDatabase(t, db)
	seedLog(t, idleServer(t).Bus, withPayments)
	srv := testserver.Start(t, db)
	head := logHeadOf(t, srv.Pool)
	for _, name := range projectionNames {
		if ok, err := srv.Projector.WaitFor(context.Background(), name, head, time.Minute); err != nil || !ok {
			t.Fatalf("server projection %s did not reach %s: %v", name, head, err)
		}
	}
	return srv
}

func TestProjectionsReplayWhileServerRuns(t *testing.T) {
	srv := seededServer(t, false)
	before := dumpReadModels(t, srv.Pool)
	assertServerLeads(t, srv)

	out, stderr, err := takiWith(t, strings.NewReader(""), "projections", "replay", "all", "--yes")
	if err != nil {
		t.Fatalf("replay all: %v\n%s%s", err, out, stderr)
	}
	if !strings.HasPrefix(out, "replayed users, chats, payments: ") {
		t.Errorf("replay all printed %q", out)
	}
	if got := dumpReadModels(t, srv.Pool); got != before {
		t.Errorf("after replay with a server running the read models differ:\n%s\nwant\n%s", got, before)
	}
	assertCaughtUp(t, srv.Pool)
	assertServerLeads(t, srv)
	// The server still leads its consumer groups and applies new events.
	c := srv.Client(t)
	c.Register("after-replay-"+uuid.NewString()[:8]+"@example.com", "correct horse", "After Replay")
	pos, err := events.ParsePosition(c.Token)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := srv.Projector.WaitFor(context.Background(), "users", pos, 30*time.Second); err != nil || !ok {
		t.Fatalf("server did not apply %s after the replay: %v", pos, err)
	}
}

// assertServerLeads checks that srv leads every consumer group (so a CLI's projector can only stand by).
func assertServerLeads(t *testing.T, srv *testserver.Server) {
	t.Helper()
	statuses, err := srv.Projector.Statuses(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range statuses {
		if s.Status != "running" {
			t.Errorf("server's %s projection is %q, want running", s.Name, s.Status)
		}
	}
}

func TestProjectionsReplayRefusesWithoutYes(t *testing.T) {
	srv := builtServer(t, false)
	before := dumpReadModels(t, srv.Pool)

	out, _, err := takiWith(t, strings.NewReader("y\n"), "projections", "replay", "users")
	var ce *usageErr
	if !errors.As(err, &ce) || ce.Arg != "--yes" || !strings.Contains(err.Error(), "not a terminal") {
		t.Errorf("replay without --yes off a terminal: %v, want a usage error naming --yes", err)
	}
	if out != "" {
		t.Errorf("printed %q", out)
	}
	if got := dumpReadModels(t, srv.Pool); got != before {
		t.Errorf("a refused replay changed the read models:\n%s\nwant\n%s", got, before)
	}
}

func TestProjectionsReplayUnknownName(t *testing.T) {
	useDatabase(t, pgtest.NewDatabase(t))
	for _, args := range [][]string{{"replay", "nope", "--yes"}, {"replay", "--yes"}, {"replay", "users", "chats", "--yes"}} {
		out, _, err := takiWith(t, strings.NewReader(""), append([]string{"projections"}, args...)...)
		var ce *usageErr
		if !errors.As(err, &ce) || ce.Arg != "NAME" || !strings.Contains(err.Error(), "users, chats, payments") {
			t.Errorf("%v: %v, want a usage error listing the projections", args, err)
		}
		if out != "" {
			t.Errorf("%v printed %q", args, out)
		}
	}
}

// TestProjectionsReplayUsageExits2 runs the binary: a usage error is one line on stderr and exit 2,
// before anything is reset.
func TestProjectionsReplayUsageExits2(t *testing.T) {
	db := pgtest.NewDatabase(t)
	useDatabase(t, db)
	for _, tc := range []struct{ args, want string }{
		{"projections replay nope --yes", `"nope"`},
		{"projections replay users", "--yes"},
	} {
		// Standard input is /dev/null: not a terminal.
		wantExit2(t, []string{"TAKI_MAIN_TEST_ARGS=" + tc.args}, tc.want)
	}
}

func TestReplayProgressPlainLines(t *testing.T) {
	var b bytes.Buffer
	p := newReplayProgress(&b, []string{"users", "chats"}, 1000)
	if p.bar != nil || p.every != time.Second {
		t.Fatalf("off a terminal: bar %v, every %s; want plain lines every second", p.bar, p.every)
	}
	p.start = time.Now().Add(-2 * time.Second)
	p.update(400)
	p.finish(1000)
	line := strings.TrimSpace(b.String())
	if !strings.HasPrefix(line, "replay users, chats: 400/1000 events, ") || !strings.Contains(line, "events/s, ETA ") || strings.Count(b.String(), "\n") != 1 {
		t.Errorf("progress printed %q", b.String())
	}
}

// A replay while commands keep coming: the replay's catch-up and the server's subscriber take turns
// on the same groups, and afterwards every read model equals a fresh rebuild and holds every message.
func TestProjectionsReplayWhileCommandsFlow(t *testing.T) {
	srv := seededServer(t, false)
	ctx := context.Background()
	var chat, reader uuid.UUID
	var members []uuid.UUID
	rows, err := srv.Pool.Query(ctx, `SELECT chat_id, user_id FROM chat_members ORDER BY role, user_id`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pgx.ForEachRow(rows, []any{&chat, &reader}, func() error {
		members = append(members, reader)
		return nil
	}); err != nil || len(members) < 2 {
		t.Fatalf("seeded chat members %v: %v", members, err)
	}
	send := func(i int) error {
		m, _, err := bus.Send[handlers.SentMessage](ctx, srv.Bus, commands.SendMessage{Actor: members[i%len(members)], ChatID: chat,
			Text: fmt.Sprintf("flowing %d", i), ClientMsgID: uuid.NewString()})
		if err == nil && i%7 == 0 {
			// Reads end the chats projection's bulk runs.
			_, _, err = bus.Send[any](ctx, srv.Bus, commands.MarkChatRead{Actor: members[(i+1)%len(members)], ChatID: chat, UpToSeq: m.Message.Seq})
		}
		return err
	}
	for i := range 300 {
		if err := send(i); err != nil {
			t.Fatal(err)
		}
	}

	stop, done := make(chan struct{}), make(chan error, 1)
	during := 0
	go func() {
		for i := 300; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			during++
			if err := send(i); err != nil {
				done <- err
				return
			}
		}
	}()
	out, stderr, err := takiWith(t, strings.NewReader(""), "projections", "replay", "all", "--yes", "--batch-size", "25")
	close(stop)
	if werr := <-done; werr != nil {
		t.Fatalf("sending during the replay: %v", werr)
	}
	if during == 0 {
		t.Fatal("no message was sent while the replay ran: nothing took turns with it")
	}
	t.Logf("%d messages sent while the replay ran", during)
	if err != nil {
		t.Fatalf("replay all: %v\n%s%s", err, out, stderr)
	}

	head := logHeadOf(t, srv.Pool)
	for _, name := range projectionNames {
		if ok, err := srv.Projector.WaitFor(ctx, name, head, time.Minute); err != nil || !ok {
			t.Fatalf("projection %s did not reach %s after the replay: %v", name, head, err)
		}
	}
	var sent, stored int
	if err := srv.Pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE event_type = 'message.sent'`).Scan(&sent); err != nil {
		t.Fatal(err)
	}
	if err := srv.Pool.QueryRow(ctx, `SELECT count(*) FROM chat_messages`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if sent != stored || sent < 330 {
		t.Fatalf("%d message.sent in the log, %d messages in the read model", sent, stored)
	}
	out, stderr, err = takiWith(t, strings.NewReader(""), "projections", "verify", "all")
	if err != nil || !strings.Contains(out, "no difference") {
		t.Fatalf("verify all after a replay under load: %v\n%s%s", err, out, stderr)
	}
}
