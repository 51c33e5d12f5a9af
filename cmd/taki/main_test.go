package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"taki/commands"
	"taki/events"
	"taki/infra/bus"
	"taki/infra/config"
	"taki/infra/logging"
	"taki/infra/postgres/pgtest"
	"taki/infra/server"
	"taki/migrations"
	"taki/queries"
	"taki/tests/testserver"
)

// TestMain doubles as the real binary when TAKI_MAIN_TEST_ARGS is set, so tests can watch main's exit
// code and stderr.
func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv("TAKI_MAIN_TEST_ARGS"); ok {
		os.Args = append([]string{"taki"}, strings.Fields(args)...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// taki runs the command line in-process and returns what it printed on stdout.
func taki(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func mustTaki(t *testing.T, args ...string) string {
	t.Helper()
	out, err := taki(t, args...)
	if err != nil {
		t.Fatalf("taki %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// useDatabase points TAKI_DATABASE_URL at databaseURL and sets a valid secret for this test.
func useDatabase(t *testing.T, databaseURL string) {
	t.Setenv("TAKI_DATABASE_URL", databaseURL)
	t.Setenv("TAKI_SECRET", testserver.Secret)
	t.Setenv("TAKI_HTTP_ADDR", "")
	t.Setenv("TAKI_LOG_LEVEL", "error")
}

// missingDatabase returns the URL of a database that does not exist yet and drops it after the test.
func missingDatabase(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "taki_cli_" + hex.EncodeToString(b)
	u, err := url.Parse(pgtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	t.Cleanup(func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, pgtest.AdminURL())
		if err != nil {
			t.Errorf("drop %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	return u.String()
}

// migrationFiles lists the embedded migrations in order.
func migrationFiles(t *testing.T) []string {
	t.Helper()
	names, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(names) == 0 {
		t.Fatalf("migrations: %v %v", names, err)
	}
	slices.Sort(names)
	return names
}

// migrationStatus parses `migrate status`: file name → "applied" or "pending".
func migrationStatus(t *testing.T, out string) map[string]string {
	t.Helper()
	line := regexp.MustCompile(`^(\S+\.sql)\s+(pending|applied \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)$`)
	st := map[string]string{}
	for l := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		m := line.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			t.Fatalf("unexpected status line %q in:\n%s", l, out)
		}
		st[m[1]] = strings.Fields(m[2])[0]
	}
	return st
}

func publicTables(t *testing.T, databaseURL string) int {
	t.Helper()
	var n int
	queryOne(t, databaseURL, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'goose_db_version'`, &n)
	return n
}

// schemaOf describes the public schema (tables, their columns, indexes and storage options) without
// goose's own table, so that two states of the schema compare equal exactly when a migration and its
// down left nothing behind.
func schemaOf(t *testing.T, databaseURL string) string {
	t.Helper()
	var s string
	queryOne(t, databaseURL, `SELECT concat_ws(E'\n',
		(SELECT string_agg(table_name || '.' || column_name || ' ' || data_type, E'\n' ORDER BY table_name, column_name)
			FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'goose_db_version'),
		(SELECT string_agg(indexdef, E'\n' ORDER BY indexdef) FROM pg_indexes
			WHERE schemaname = 'public' AND tablename <> 'goose_db_version'),
		(SELECT string_agg(relname || ' ' || array_to_string(reloptions, ','), E'\n' ORDER BY relname) FROM pg_class
			WHERE relnamespace = 'public'::regnamespace AND reloptions IS NOT NULL))`, &s)
	return s
}

func queryOne(t *testing.T, databaseURL, sql string, dst any) {
	t.Helper()
	pool := pgtest.NewPool(t, databaseURL)
	defer pool.Close()
	if err := pool.QueryRow(context.Background(), sql).Scan(dst); err != nil {
		t.Fatal(err)
	}
}

func TestMigrateUpStatusDownUp(t *testing.T) {
	db := missingDatabase(t)
	useDatabase(t, db)
	files := migrationFiles(t)

	// up creates the missing database and applies every migration, in order.
	out := mustTaki(t, "migrate", "up")
	var applied []string
	for l := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "applied" {
			t.Fatalf("unexpected line %q in:\n%s", l, out)
		}
		applied = append(applied, f[1])
	}
	if !slices.Equal(applied, files) {
		t.Fatalf("migrate up applied %v, want %v", applied, files)
	}
	tables := publicTables(t, db)
	schema := schemaOf(t, db)
	if tables == 0 {
		t.Fatal("migrate up created no table")
	}

	st := migrationStatus(t, mustTaki(t, "migrate", "status"))
	for _, f := range files {
		if st[f] != "applied" {
			t.Errorf("status of %s: %q, want applied", f, st[f])
		}
	}
	if len(st) != len(files) {
		t.Errorf("status lists %d migrations, want %d", len(st), len(files))
	}

	last := files[len(files)-1]
	if out := mustTaki(t, "migrate", "down"); strings.TrimSpace(out) != "rolled back "+last {
		t.Errorf("migrate down printed %q, want %q", out, "rolled back "+last)
	}
	st = migrationStatus(t, mustTaki(t, "migrate", "status"))
	for _, f := range files {
		want := "applied"
		if f == last {
			want = "pending"
		}
		if st[f] != want {
			t.Errorf("after down, status of %s: %q, want %s", f, st[f], want)
		}
	}
	if schemaOf(t, db) == schema {
		t.Errorf("after down of %s the schema is unchanged", last)
	}

	out = mustTaki(t, "migrate", "up")
	if f := strings.Fields(out); len(f) < 2 || f[0] != "applied" || f[1] != last || strings.Count(out, "\n") != 1 {
		t.Errorf("second up printed %q, want only %s applied", out, last)
	}
	if got := schemaOf(t, db); got != schema {
		t.Errorf("after up again the schema differs from the first up:\n%s\nwant\n%s", got, schema)
	}
	if out := mustTaki(t, "migrate", "up"); strings.TrimSpace(out) != "no pending migrations" {
		t.Errorf("up with nothing to do printed %q", out)
	}
}

func TestMigrateRejectsArguments(t *testing.T) {
	useDatabase(t, pgtest.NewDatabase(t))
	if _, err := taki(t, "migrate", "down", "3"); err == nil {
		t.Error("migrate down 3 succeeded: the subcommands take no arguments")
	}
}

func sessionsOf(t *testing.T, srv *testserver.Server, userID uuid.UUID) int {
	t.Helper()
	var n int
	if err := srv.Pool.QueryRow(context.Background(), `SELECT count(*) FROM sessions WHERE user_id = $1`, userID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestUsersPromote(t *testing.T) {
	db := pgtest.NewDatabase(t)
	useDatabase(t, db)
	srv := testserver.Start(t, db)
	ctx := context.Background()

	email := "promote-" + uuid.NewString()[:8] + "@example.com"
	const password = "correct horse battery"
	u, _, err := bus.Send[queries.User](ctx, srv.Bus, commands.RegisterUser{
		UserID: uuid.Must(uuid.NewV7()), Email: email, Password: password, DisplayName: "To Promote",
	})
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := srv.Client(t), srv.Client(t)
	c1.LogIn(email, password)
	c2.LogIn(email, password)
	if r := c1.Do(http.MethodGet, "/api/v1/admin/projections", nil); r.StatusCode != http.StatusForbidden {
		t.Fatalf("a member reads the admin API: %d", r.StatusCode)
	}
	if n := sessionsOf(t, srv, u.ID); n != 2 {
		t.Fatalf("set-up: %d sessions, want 2", n)
	}

	out := mustTaki(t, "users", "promote", email)
	if !strings.Contains(out, email) || !strings.Contains(out, u.ID.String()) || !strings.Contains(out, "admin") {
		t.Errorf("promote printed %q, want the email, the id and the new role", out)
	}
	if n := sessionsOf(t, srv, u.ID); n != 0 {
		t.Errorf("%d sessions left after the promotion, want 0", n)
	}
	for _, c := range []*testserver.Client{c1, c2} {
		if r := c.Do(http.MethodGet, "/api/v1/users/me", nil); r.StatusCode != http.StatusUnauthorized {
			t.Errorf("a session from before the promotion answers %d, want 401", r.StatusCode)
		}
	}

	// A new session has the new role.
	c1.LogIn(email, password)
	r := c1.Do(http.MethodGet, "/api/v1/users/me", nil)
	var me struct {
		Role string `json:"role"`
	}
	r.JSON(t, &me)
	if r.StatusCode != http.StatusOK || me.Role != "admin" || r.Header.Get("X-Consistency-Stale") != "" {
		t.Errorf("me after promotion: %d %s (stale %q)", r.StatusCode, r.Body, r.Header.Get("X-Consistency-Stale"))
	}
	if r := c1.Do(http.MethodGet, "/api/v1/admin/projections", nil); r.StatusCode != http.StatusOK {
		t.Errorf("the promoted user cannot read the admin API: %d %s", r.StatusCode, r.Body)
	}

	// Promoting an admin again is harmless.
	if _, err := taki(t, "users", "promote", email); err != nil {
		t.Errorf("second promotion: %v", err)
	}
}

func TestUsersPromoteUnknownOrInvalid(t *testing.T) {
	useDatabase(t, pgtest.NewDatabase(t))
	out, err := taki(t, "users", "promote", "unknown@x.y")
	if err == nil {
		t.Fatalf("promoting an unknown user succeeded: %q", out)
	}
	if !commands.IsKind(err, commands.KindNotFound) || !strings.Contains(err.Error(), "not found") {
		t.Errorf("unknown user: %v, want a not-found error saying so", err)
	}
	if out != "" {
		t.Errorf("printed %q on failure", out)
	}
	_, err = taki(t, "users", "promote", "not-an-email")
	if !commands.IsKind(err, commands.KindValidation) {
		t.Errorf("malformed email: %v, want a validation error", err)
	}
	if _, err := taki(t, "users", "promote"); err == nil || !strings.Contains(err.Error(), "arg") {
		t.Errorf("no email: %v, want an error about the missing argument", err)
	}
}

// projectionsRow returns the fields of the users row of `projections list`.
func projectionsRow(t *testing.T, out string) []string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME CHECKPOINT LAG STATUS" {
		t.Fatalf("projections list printed:\n%s", out)
	}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == "users" {
			return f
		}
	}
	t.Fatalf("no users projection in:\n%s", out)
	return nil
}

func TestProjectionsList(t *testing.T) {
	db := pgtest.NewDatabase(t)
	useDatabase(t, db)
	srv := testserver.Start(t, db)
	c := srv.Client(t)
	c.Register("list-"+uuid.NewString()[:8]+"@example.com", "correct horse", "Lister")
	pos, err := events.ParsePosition(c.Token)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := srv.Projector.WaitFor(context.Background(), "users", pos, 30*time.Second); err != nil || !ok {
		t.Fatalf("projection did not apply %s: %v", pos, err)
	}
	row := projectionsRow(t, mustTaki(t, "projections", "list"))
	if got := strings.Join(row, " "); got != "users "+pos.String()+" 0 caught up" {
		t.Errorf("users row %q, want %q", got, "users "+pos.String()+" 0 caught up")
	}
}

func TestProjectionsListBehind(t *testing.T) {
	db := pgtest.NewDatabase(t)
	useDatabase(t, db)
	// A server whose projections never run: every event it appends stays unapplied.
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(context.Background(), cfg, logging.Discard(), server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for i := range 2 {
		_, _, err := bus.Send[queries.User](context.Background(), srv.Bus, commands.RegisterUser{
			UserID: uuid.Must(uuid.NewV7()), Email: "behind-" + uuid.NewString()[:8] + "@example.com",
			Password: "correct horse", DisplayName: "Behind " + string(rune('A'+i)),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	row := projectionsRow(t, mustTaki(t, "projections", "list"))
	if got := strings.Join(row, " "); got != "users 0.0 2 behind" {
		t.Errorf("users row %q, want %q", got, "users 0.0 2 behind")
	}
}

func TestConfigurationErrorsNameTheVariable(t *testing.T) {
	db := pgtest.NewDatabase(t)
	subcommands := [][]string{
		{"serve"},
		{"migrate", "up"},
		{"migrate", "down"},
		{"migrate", "status"},
		{"users", "promote", "someone@example.com"},
		{"projections", "list"},
	}
	check := func(t *testing.T, want string, extra ...string) {
		t.Helper()
		for _, sub := range subcommands {
			args := append(slices.Clone(sub), extra...)
			_, err := taki(t, args...)
			var ce *config.Error
			if !errors.As(err, &ce) || ce.Name != want {
				t.Errorf("taki %s: %v, want a *config.Error naming %s", strings.Join(args, " "), err, want)
			}
		}
	}

	t.Run("missing secret", func(t *testing.T) {
		useDatabase(t, db)
		t.Setenv("TAKI_SECRET", "")
		check(t, "TAKI_SECRET")
	})
	t.Run("short secret", func(t *testing.T) {
		useDatabase(t, db)
		t.Setenv("TAKI_SECRET", "too-short")
		check(t, "TAKI_SECRET")
	})
	t.Run("malformed http addr", func(t *testing.T) {
		useDatabase(t, db)
		t.Setenv("TAKI_HTTP_ADDR", "localhost")
		check(t, "TAKI_HTTP_ADDR")
	})
	t.Run("malformed http addr flag", func(t *testing.T) {
		useDatabase(t, db)
		check(t, "TAKI_HTTP_ADDR", "--http-addr", "127.0.0.1:http")
	})
	t.Run("malformed log level", func(t *testing.T) {
		useDatabase(t, db)
		t.Setenv("TAKI_LOG_LEVEL", "chatty")
		check(t, "TAKI_LOG_LEVEL")
	})
	t.Run("malformed database url flag", func(t *testing.T) {
		useDatabase(t, db)
		check(t, "TAKI_DATABASE_URL", "--database-url", "mysql://root@localhost/taki")
	})
	t.Run("flags override the environment", func(t *testing.T) {
		useDatabase(t, db)
		t.Setenv("TAKI_HTTP_ADDR", "localhost")
		if _, err := taki(t, "migrate", "status", "--http-addr", "127.0.0.1:0"); err != nil {
			t.Errorf("a valid --http-addr did not override a bad TAKI_HTTP_ADDR: %v", err)
		}
	})
}

// TestMainPrintsOneLineAndExits2 runs the binary's main: a configuration error is one line on stderr
// naming the setting, and exit status 2.
func TestMainPrintsOneLineAndExits2(t *testing.T) {
	db := pgtest.NewDatabase(t)
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"TAKI_SECRET="}, "TAKI_SECRET"},
		{[]string{"TAKI_SECRET=" + testserver.Secret, "TAKI_HTTP_ADDR=nonsense"}, "TAKI_HTTP_ADDR"},
	} {
		wantExit2(t, append([]string{"TAKI_MAIN_TEST_ARGS=serve", "TAKI_DATABASE_URL=" + db, "TAKI_HTTP_ADDR=", "TAKI_LOG_LEVEL="}, tc.env...), tc.want)
	}
}

// wantExit2 runs the binary's main with env added to this test's environment, and checks that it
// prints one line on stderr containing every string of want, nothing on stdout, and exits with 2.
func wantExit2(t *testing.T, env []string, want ...string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Errorf("%v: %v, want exit status 2 (stderr %q)", env, err, stderr.String())
		return
	}
	lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
	if len(lines) != 1 {
		t.Errorf("%v: stderr %q, want one line", env, stderr.String())
	}
	for _, w := range want {
		if !strings.Contains(lines[0], w) {
			t.Errorf("%v: stderr %q does not name %s", env, stderr.String(), w)
		}
	}
	if stdout.Len() != 0 {
		t.Errorf("%v: stdout %q", env, stdout.String())
	}
}
