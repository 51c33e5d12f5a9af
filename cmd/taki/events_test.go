package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
	"taki/infra/bus"
	"taki/infra/postgres"
	"taki/infra/postgres/pgtest"
	"taki/infra/server"
	"taki/queries"
)

const tailPassword = "correct horse battery"

// register appends a user.registered event (which carries a password hash) and returns the user.
func register(t *testing.T, srv *server.Server) queries.User {
	t.Helper()
	u, _, err := bus.Send[queries.User](context.Background(), srv.Bus, commands.RegisterUser{
		UserID: uuid.Must(uuid.NewV7()), Email: "tail-" + uuid.NewString()[:8] + "@example.com",
		Password: tailPassword, DisplayName: "Tail",
	})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func promote(t *testing.T, srv *server.Server, email string) {
	t.Helper()
	if _, _, err := bus.Send[queries.User](context.Background(), srv.Bus, commands.PromoteUser{Email: email}); err != nil {
		t.Fatal(err)
	}
}

// parseTail parses JSON lines into logged events, checking that every line is one JSON object.
func parseTail(t *testing.T, out string) []queries.LoggedEvent {
	t.Helper()
	var evs []queries.LoggedEvent
	for l := range strings.SplitSeq(out, "\n") {
		if l == "" {
			continue
		}
		var e queries.LoggedEvent
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("line %q is not a logged event: %v", l, err)
		}
		evs = append(evs, e)
	}
	return evs
}

// loggedLog reads the whole log straight from the table, in log order: what tail must print.
func loggedLog(t *testing.T, srv *server.Server) (ids, types []string) {
	t.Helper()
	rows, err := srv.Pool.Query(context.Background(), `SELECT event_id::text, event_type FROM events ORDER BY transaction_id, "offset"`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, typ string
		if err := rows.Scan(&id, &typ); err != nil {
			t.Fatal(err)
		}
		ids, types = append(ids, id), append(types, typ)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids, types
}

func idsOf(evs []queries.LoggedEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func passwordHashes(t *testing.T, srv *server.Server) []string {
	t.Helper()
	rows, err := srv.Pool.Query(context.Background(), `SELECT payload->>'password_hash' FROM events WHERE payload::jsonb ? 'password_hash'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEventsTailPrintsTheLog(t *testing.T) {
	useDatabase(t, pgtest.NewDatabase(t))
	srv := idleServer(t)

	if out := mustTaki(t, "events", "tail"); out != "" {
		t.Errorf("an empty log printed %q", out)
	}
	var emails []string
	for range 3 {
		emails = append(emails, register(t, srv).Email)
	}
	promote(t, srv, emails[1])
	wantIDs, wantTypes := loggedLog(t, srv)
	if len(wantIDs) < 4 {
		t.Fatalf("set-up: %d events in the log", len(wantIDs))
	}

	// Page in batches of 2 so that the paging itself is exercised.
	defer func(n int) { tailBatchSize = n }(tailBatchSize)
	tailBatchSize = 2

	out := mustTaki(t, "events", "tail")
	all := parseTail(t, out)
	if got := idsOf(all); !slices.Equal(got, wantIDs) {
		t.Fatalf("tail printed ids %v, want the log's %v", got, wantIDs)
	}
	for i, e := range all {
		if e.Type != wantTypes[i] || e.StreamType != events.StreamUser || e.SchemaVersion < 1 || e.Version < 1 ||
			e.StreamID == "" || e.OccurredAt.IsZero() || len(e.Data) == 0 {
			t.Errorf("event %d: %+v", i, e)
		}
		if i > 0 {
			prev, err1 := events.ParsePosition(all[i-1].Position)
			cur, err2 := events.ParsePosition(e.Position)
			if err1 != nil || err2 != nil || !prev.Less(cur) {
				t.Errorf("positions %q then %q are not increasing (%v, %v)", all[i-1].Position, e.Position, err1, err2)
			}
		}
	}

	// Password hashes never reach the output; the events say they were redacted.
	hashes := passwordHashes(t, srv)
	if len(hashes) != 3 {
		t.Fatalf("set-up: %d password hashes in the log, want 3", len(hashes))
	}
	for _, h := range hashes {
		if h == "" || strings.Contains(out, h) {
			t.Errorf("tail printed the password hash %q", h)
		}
	}
	if strings.Contains(out, tailPassword) {
		t.Error("tail printed the password")
	}
	for _, e := range all {
		if e.Type != "user.registered" {
			continue
		}
		var data map[string]any
		if err := json.Unmarshal(e.Data, &data); err != nil || data["password_hash"] != "[redacted]" || data["email"] == "" {
			t.Errorf("user.registered data %s: want the event with its hash redacted (%v)", e.Data, err)
		}
	}

	// Every position is usable as --after, which skips exactly what came before it.
	for i, e := range all {
		rest := parseTail(t, mustTaki(t, "events", "tail", "--after", e.Position))
		if got, want := idsOf(rest), idsOf(all[i+1:]); !slices.Equal(got, want) {
			t.Errorf("--after %s printed %v, want %v", e.Position, got, want)
		}
	}
	if out := mustTaki(t, "events", "tail", "--after", "0.0"); out != mustTaki(t, "events", "tail") {
		t.Error("--after 0.0 is not the start of the log")
	}

	// --type keeps only that type, in log order, and combines with --after.
	var registered []string
	for _, e := range all {
		if e.Type == "user.registered" {
			registered = append(registered, e.ID)
		}
	}
	got := parseTail(t, mustTaki(t, "events", "tail", "--type", "user.registered"))
	if !slices.Equal(idsOf(got), registered) {
		t.Errorf("--type user.registered printed %v, want %v", idsOf(got), registered)
	}
	got = parseTail(t, mustTaki(t, "events", "tail", "--type", "user.registered", "--after", got[0].Position))
	if !slices.Equal(idsOf(got), registered[1:]) {
		t.Errorf("--type with --after printed %v, want %v", idsOf(got), registered[1:])
	}
	got = parseTail(t, mustTaki(t, "events", "tail", "--type", "user.role_changed"))
	if len(got) != 1 || got[0].Type != "user.role_changed" {
		t.Errorf("--type user.role_changed printed %+v", got)
	}
	if out := mustTaki(t, "events", "tail", "--type", "payment.completed"); out != "" {
		t.Errorf("a known type without events printed %q", out)
	}
}

func TestEventsTailRejectsBadFlags(t *testing.T) {
	useDatabase(t, pgtest.NewDatabase(t))
	for _, tc := range []struct {
		args []string
		name string
		want []string
	}{
		{[]string{"--after", "nonsense"}, "--after", []string{`"nonsense"`, "position"}},
		{[]string{"--after", "12"}, "--after", []string{`"12"`}},
		{[]string{"--after", "1.x"}, "--after", []string{`"1.x"`}},
		{[]string{"--type", "user.exploded"}, "--type", []string{`"user.exploded"`, "user.registered", "message.sent", "payment.completed"}},
	} {
		args := append([]string{"events", "tail"}, tc.args...)
		out, err := taki(t, args...)
		var ce *usageErr
		if !errors.As(err, &ce) || ce.Arg != tc.name {
			t.Errorf("taki %v: %v, want a usage error naming %s", tc.args, err, tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("taki %v: %q does not mention %s", tc.args, err, w)
			}
		}
		if out != "" {
			t.Errorf("taki %v printed %q", tc.args, out)
		}
	}
	if _, err := taki(t, "events", "tail", "extra"); err == nil {
		t.Error("events tail took an argument")
	}
}

// TestEventsTailBadAfterExits2 runs the binary: a malformed --after is one line on stderr and exit 2.
func TestEventsTailBadAfterExits2(t *testing.T) {
	useDatabase(t, pgtest.NewDatabase(t))
	wantExit2(t, []string{"TAKI_MAIN_TEST_ARGS=events tail --after yesterday"}, "--after", "yesterday")
}

// lineWriter hands every line written to it to a channel.
type lineWriter struct {
	buf   []byte
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.lines <- string(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

func nextEvent(t *testing.T, lines <-chan string, what string) queries.LoggedEvent {
	t.Helper()
	select {
	case l := <-lines:
		evs := parseTail(t, l)
		if len(evs) != 1 {
			t.Fatalf("%s: line %q", what, l)
		}
		return evs[0]
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no line within 30s", what)
		return queries.LoggedEvent{}
	}
}

// TestEventsTailFollowInProcess follows the log with a poll interval far beyond the test's waits: the
// event appended after the start arrives through the NOTIFY wake-up, and cancelling the context ends
// the command without an error.
func TestEventsTailFollowInProcess(t *testing.T) {
	useDatabase(t, pgtest.NewDatabase(t))
	srv := idleServer(t)
	first := register(t, srv)
	register(t, srv)

	defer func(d time.Duration) { tailPollInterval = d }(tailPollInterval)
	tailPollInterval = 10 * time.Minute

	all := parseTail(t, mustTaki(t, "events", "tail"))
	if len(all) != 2 {
		t.Fatalf("set-up: %d events", len(all))
	}

	lines := make(chan string, 100)
	root := newRoot()
	root.SetOut(&lineWriter{lines: lines})
	root.SetErr(io.Discard)
	root.SetArgs([]string{"events", "tail", "--follow", "--after", all[0].Position, "--type", "user.registered"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	if e := nextEvent(t, lines, "the event after --after"); e.ID != all[1].ID {
		t.Fatalf("first line %+v, want the second event %s", e, all[1].ID)
	}

	// Appended while the command follows: one event of another type (filtered out), then one of the
	// followed type. The CLI's own process appended nothing, so it learns of them by NOTIFY.
	promote(t, srv, first.Email)
	third := register(t, srv)
	if err := postgres.AnnounceNow(context.Background(), srv.Pool); err != nil {
		t.Fatal(err)
	}
	e := nextEvent(t, lines, "the event appended while following")
	var data map[string]any
	if err := json.Unmarshal(e.Data, &data); err != nil || e.Type != "user.registered" || data["email"] != third.Email || data["password_hash"] != "[redacted]" {
		t.Fatalf("followed event %+v, want %s's registration, redacted", e, third.Email)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("follow ended with %v on cancellation, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("follow did not stop on cancellation")
	}
	select {
	case l := <-lines:
		t.Errorf("unexpected line %q (the role change is not of the followed type)", l)
	default:
	}
}

// TestEventsTailFollowStopsOnSIGTERM runs `taki events tail --follow` as its own process: it prints the
// log, then an event appended while it runs, and exits 0 on SIGTERM.
func TestEventsTailFollowStopsOnSIGTERM(t *testing.T) {
	db := pgtest.NewDatabase(t)
	useDatabase(t, db)
	srv := idleServer(t)
	before := register(t, srv)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TAKI_MAIN_TEST_ARGS=events tail --follow")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()

	if e := nextEvent(t, lines, "the existing event"); e.Type != "user.registered" || !strings.Contains(string(e.Data), before.Email) {
		t.Fatalf("first line %+v, want %s's registration", e, before.Email)
	}
	after := register(t, srv)
	if err := postgres.AnnounceNow(context.Background(), srv.Pool); err != nil {
		t.Fatal(err)
	}
	if e := nextEvent(t, lines, "the appended event"); !strings.Contains(string(e.Data), after.Email) {
		t.Fatalf("followed line %+v, want %s's registration", e, after.Email)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() {
		for range lines { // drain until the pipe closes, then reap
		}
		exited <- cmd.Wait()
	}()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exited with %v after SIGTERM, want status 0\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("follow did not stop on SIGTERM")
	}
	if strings.Contains(stderr.String(), "taki:") {
		t.Errorf("stderr after SIGTERM: %q", stderr.String())
	}
}

// epipeWriter accepts n writes, then fails as a pipe whose reader went away.
type epipeWriter struct{ n int }

func (w *epipeWriter) Write(p []byte) (int, error) {
	if w.n == 0 {
		return 0, &os.PathError{Op: "write", Path: "/dev/stdout", Err: syscall.EPIPE}
	}
	w.n--
	return len(p), nil
}

// TestEventsTailClosedOutputExitsQuietly: `taki events tail | head -1` ends without an error when head
// closes the pipe.
func TestEventsTailClosedOutputExitsQuietly(t *testing.T) {
	useDatabase(t, pgtest.NewDatabase(t))
	srv := idleServer(t)
	for range 3 {
		register(t, srv)
	}
	defer func(n int) { tailBatchSize = n }(tailBatchSize)
	tailBatchSize = 1
	for _, follow := range []bool{false, true} {
		root := newRoot()
		root.SetOut(&epipeWriter{n: 1})
		args := []string{"events", "tail"}
		if follow {
			args = append(args, "--follow")
		}
		root.SetArgs(args)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := root.ExecuteContext(ctx)
		if ctxErr := ctx.Err(); ctxErr != nil {
			t.Errorf("follow=%v: still running when its output closed (%v)", follow, ctxErr)
		}
		cancel()
		if err != nil {
			t.Errorf("follow=%v: %v, want a quiet exit on EPIPE", follow, err)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestEventsTailWaitsForHiddenEvents: an event committed while an older transaction still runs is
// hidden from log readers; without --follow, tail waits for it (saying why) instead of stopping short
// of the log's head, so that the last position it prints is safe to resume from.
func TestEventsTailWaitsForHiddenEvents(t *testing.T) {
	useDatabase(t, pgtest.NewDatabase(t))
	srv := idleServer(t)
	register(t, srv)
	ctx := context.Background()

	defer func(d time.Duration) { tailNoteAfter = d }(tailNoteAfter)
	tailNoteAfter = 50 * time.Millisecond

	older, err := srv.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = older.Rollback(ctx) }()
	if _, err := older.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil { // takes a transaction id
		t.Fatal(err)
	}
	late := register(t, srv) // commits after the older transaction began: hidden until it ends

	var stdout, stderr syncBuffer
	root := newRoot()
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs([]string{"events", "tail"})
	done := make(chan error, 1)
	runCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	go func() { done <- root.ExecuteContext(runCtx) }()

	deadline := time.After(30 * time.Second)
	for !strings.Contains(stderr.String(), "waiting for events") {
		select {
		case err := <-done:
			t.Fatalf("tail ended (%v) while an event was hidden; printed:\n%s", err, stdout.String())
		case <-deadline:
			t.Fatalf("no note on stderr: %q", stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if !strings.Contains(stderr.String(), "(oldest: pid ") {
		t.Errorf("the note names no transaction: %q", stderr.String())
	}
	if err := older.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-deadline:
		t.Fatal("tail did not finish once the older transaction ended")
	}
	evs := parseTail(t, stdout.String())
	if len(evs) != 2 || !strings.Contains(string(evs[1].Data), late.Email) {
		t.Errorf("printed %d events, want both registrations:\n%s", len(evs), stdout.String())
	}
}

// An event this binary cannot read (a newer binary's type, during a rolling deploy) is printed in
// its place with data null and the reason, and the tail reads on past it.
func TestEventsTailShowsAnUnreadableEventAndReadsOn(t *testing.T) {
	useDatabase(t, pgtest.NewDatabase(t))
	srv := idleServer(t)
	first := register(t, srv)
	if _, err := srv.Pool.Exec(context.Background(), `INSERT INTO events (transaction_id, event_id, stream_id, stream_type,
			version, event_type, schema_version, occurred_at, payload, metadata)
		VALUES (pg_current_xact_id(), $1, $2, 'user', 99, 'user.nickname_set', 1, now(), '{"nickname": "x"}', '{}')`,
		uuid.New(), first.ID); err != nil {
		t.Fatal(err)
	}
	register(t, srv)
	wantIDs, wantTypes := loggedLog(t, srv)

	defer func(n int) { tailBatchSize = n }(tailBatchSize)
	for _, batch := range []int{1, 2, 100} {
		tailBatchSize = batch
		all := parseTail(t, mustTaki(t, "events", "tail"))
		if got := idsOf(all); !slices.Equal(got, wantIDs) {
			t.Fatalf("batch %d: tail printed ids %v, want the log's %v", batch, got, wantIDs)
		}
		for i, e := range all {
			unreadable := wantTypes[i] == "user.nickname_set"
			if unreadable != (e.Unreadable != "") || unreadable != (string(e.Data) == "null") {
				t.Fatalf("batch %d: event %d (%s) has data %s, unreadable %q", batch, i, e.Type, e.Data, e.Unreadable)
			}
			if unreadable && !strings.Contains(e.Unreadable, "unknown event type") {
				t.Fatalf("unreadable says %q", e.Unreadable)
			}
		}
	}
}
