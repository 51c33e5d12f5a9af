package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/commands"
	"taki/infra/bus"
	"taki/infra/postgres/pgtest"
	"taki/queries"
)

// scratchSchemas counts the schemas verify creates; it must leave none behind.
func scratchSchemas(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'verify\_%'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestProjectionsVerifyConsistent(t *testing.T) {
	srv := builtServer(t, true)
	before := dumpReadModels(t, srv.Pool)

	out, stderr, err := takiWith(t, strings.NewReader(""), "projections", "verify", "users")
	if err != nil {
		t.Fatalf("verify users: %v\n%s%s", err, out, stderr)
	}
	if !strings.Contains(out, "users: ok, ") || !strings.Contains(out, "verified users: no difference, ") || strings.Contains(out, "chats") {
		t.Errorf("verify users printed %q", out)
	}
	out, stderr, err = takiWith(t, strings.NewReader(""), "projections", "verify", "all", "--batch-size", "7")
	if err != nil {
		t.Fatalf("verify all: %v\n%s%s", err, out, stderr)
	}
	for _, name := range projectionNames {
		if !strings.Contains(out, name+": ok, ") {
			t.Errorf("verify all printed %q, want %s ok", out, name)
		}
	}
	if !strings.Contains(out, "verified users, chats, payments: no difference, ") || !strings.Contains(out, " events checked in ") {
		t.Errorf("verify all printed %q", out)
	}
	if got := dumpReadModels(t, srv.Pool); got != before {
		t.Errorf("verify changed the read models:\n%s\nwant\n%s", got, before)
	}
	if n := scratchSchemas(t, srv.Pool); n != 0 {
		t.Errorf("verify left %d scratch schemas", n)
	}
	assertCaughtUp(t, srv.Pool)
}

func TestProjectionsVerifyFindsDifferences(t *testing.T) {
	srv := builtServer(t, true)
	ctx := context.Background()
	var renamed uuid.UUID
	if err := srv.Pool.QueryRow(ctx, `UPDATE user_profiles SET display_name = 'Corrupted Name'
		WHERE id = (SELECT id FROM user_profiles ORDER BY id LIMIT 1) RETURNING id`).Scan(&renamed); err != nil {
		t.Fatal(err)
	}
	var deleted string
	if err := srv.Pool.QueryRow(ctx, `DELETE FROM chat_messages WHERE text = 'message 7' RETURNING text`).Scan(&deleted); err != nil {
		t.Fatal(err)
	}
	stray := uuid.New()
	if _, err := srv.Pool.Exec(ctx, `INSERT INTO user_profiles (id, email, display_name, name_key, role, created_at)
		VALUES ($1, 'stray@example.com', 'Stray Row', 'stray row', 'user', now())`, stray); err != nil {
		t.Fatal(err)
	}
	before := dumpReadModels(t, srv.Pool)

	out, stderr, err := takiWith(t, strings.NewReader(""), "projections", "verify", "all")
	if !errors.Is(err, errVerifyDiffers) {
		t.Fatalf("verify all of a corrupted read model: %v, want errVerifyDiffers\n%s%s", err, out, stderr)
	}
	for _, want := range []string{
		"users: DIFFERS", "chats: DIFFERS", "payments: ok, ",
		"user_profiles: 2 row(s) only in live", "user_profiles: 1 row(s) missing from live",
		"chat_messages: 1 row(s) missing from live",
		`"display_name": "Corrupted Name"`, renamed.String(), stray.String(), `"text": "message 7"`,
		"verified users, chats, payments: differences found",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verify output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "chat_messages: 1 row(s) only in live") {
		t.Errorf("verify reports a live chat message the rebuild lacks:\n%s", out)
	}
	if got := dumpReadModels(t, srv.Pool); got != before {
		t.Errorf("verify changed the read models:\n%s\nwant\n%s", got, before)
	}
	if n := scratchSchemas(t, srv.Pool); n != 0 {
		t.Errorf("verify left %d scratch schemas", n)
	}

	// --rows bounds the rows shown; the count stays.
	out, _, err = takiWith(t, strings.NewReader(""), "projections", "verify", "users", "--rows", "1")
	if !errors.Is(err, errVerifyDiffers) || !strings.Contains(out, "user_profiles: 2 row(s) only in live") || !strings.Contains(out, "... and 1 more") {
		t.Errorf("verify users --rows 1: %v\n%s", err, out)
	}

	// The binary exits 1 and says why on stderr.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TAKI_MAIN_TEST_ARGS=projections verify users")
	var stdout, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &errOut
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("taki projections verify users: %v, want exit status 1 (stderr %q)", err, errOut.String())
	}
	if !strings.Contains(stdout.String(), stray.String()) || !strings.Contains(errOut.String(), "differs") {
		t.Errorf("stdout %q, stderr %q", stdout.String(), errOut.String())
	}
}

func TestProjectionsVerifyWhileServerRuns(t *testing.T) {
	srv := seededServer(t, true)
	assertServerLeads(t, srv)

	// Keep writing while verify runs: the server's subscribers go on between verify's runs.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var writeErr error
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			_, _, err := bus.Send[queries.User](ctx, srv.Bus, commands.RegisterUser{
				UserID: uuid.Must(uuid.NewV7()), Email: fmt.Sprintf("during-verify-%d-%s@example.com", i, uuid.NewString()[:8]),
				Password: "correct horse battery", DisplayName: fmt.Sprintf("During Verify %d", i),
			})
			if err != nil && ctx.Err() == nil {
				writeErr = err
				return
			}
		}
	})
	for range 3 {
		out, stderr, err := takiWith(t, strings.NewReader(""), "projections", "verify", "all")
		if err != nil {
			stop()
			wg.Wait()
			t.Fatalf("verify all with a server running: %v\n%s%s", err, out, stderr)
		}
	}
	stop()
	wg.Wait()
	if writeErr != nil {
		t.Fatal(writeErr)
	}
	// The server still leads and catches up with everything written meanwhile.
	head := logHeadOf(t, srv.Pool)
	for _, name := range projectionNames {
		if ok, err := srv.Projector.WaitFor(context.Background(), name, head, time.Minute); err != nil || !ok {
			t.Fatalf("server projection %s did not reach %s after verify: %v", name, head, err)
		}
	}
	assertServerLeads(t, srv)
	out, stderr, err := takiWith(t, strings.NewReader(""), "projections", "verify", "users")
	if err != nil {
		t.Fatalf("verify users after the writes: %v\n%s%s", err, out, stderr)
	}
}

func TestProjectionsVerifyUnknownName(t *testing.T) {
	useDatabase(t, pgtest.NewDatabase(t))
	for _, args := range [][]string{{"verify", "nope"}, {"verify"}, {"verify", "users", "chats"}} {
		out, _, err := takiWith(t, strings.NewReader(""), append([]string{"projections"}, args...)...)
		var ce *usageErr
		if !errors.As(err, &ce) || ce.Arg != "NAME" || !strings.Contains(err.Error(), "users, chats, payments") {
			t.Errorf("%v: %v, want a usage error listing the projections", args, err)
		}
		if out != "" {
			t.Errorf("%v printed %q", args, out)
		}
	}
	for _, args := range [][]string{{"verify", "users", "--rows", "0"}, {"verify", "users", "--batch-size", "0"}} {
		_, _, err := takiWith(t, strings.NewReader(""), append([]string{"projections"}, args...)...)
		var ce *usageErr
		if !errors.As(err, &ce) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	wantExit2(t, []string{"TAKI_MAIN_TEST_ARGS=projections verify nope"}, `"nope"`)
}
