package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
	"taki/infra/bus"
	"taki/infra/postgres/pgtest"
	"taki/queries"
	"taki/tests/testserver"
)

const admPassword = "admin horse battery"

// admNewAdmin registers a user, promotes it through the bus and logs it in again (promotion ends the
// user's sessions). It returns the logged-in client and the user's id.
func admNewAdmin(t *testing.T, srv *testserver.Server) (*testserver.Client, string) {
	t.Helper()
	c := srv.Client(t)
	email := opsEmail("admin")
	u := c.Register(email, admPassword, "Admin")
	c.LogIn(email, admPassword)
	if r := c.Do(http.MethodGet, "/api/v1/users/me", nil); r.StatusCode != http.StatusOK {
		t.Fatalf("me before promotion: %d %s", r.StatusCode, r.Body)
	}
	promoted, _, err := bus.Send[queries.User](context.Background(), srv.Bus, commands.PromoteUser{Email: email})
	if err != nil {
		t.Fatalf("promote: %v", err)
	}
	if promoted.Role != "admin" {
		t.Fatalf("promoted user has role %q", promoted.Role)
	}
	// The session from before the promotion is gone: the new role applies only to new sessions.
	if r := c.Do(http.MethodGet, "/api/v1/users/me", nil); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the session from before the promotion still works: %d %s", r.StatusCode, r.Body)
	}
	c.LogIn(email, admPassword)
	return c, u["id"].(string)
}

// admNewMember registers and logs in a member.
func admNewMember(t *testing.T, srv *testserver.Server, name string) (*testserver.Client, string, string) {
	t.Helper()
	c := srv.Client(t)
	email := opsEmail(strings.ToLower(strings.ReplaceAll(name, " ", "-")))
	u := c.Register(email, admPassword, name)
	c.LogIn(email, admPassword)
	return c, u["id"].(string), email
}

// admWait waits until the users projection has applied the event at the client's last consistency token.
func admWait(t *testing.T, srv *testserver.Server, token string) {
	t.Helper()
	admWaitFor(t, srv, "users", token)
}

// admWaitFor waits until the projection called name has applied the event at token.
func admWaitFor(t *testing.T, srv *testserver.Server, name, token string) {
	t.Helper()
	pos, err := events.ParsePosition(token)
	if err != nil {
		t.Fatalf("consistency token %q: %v", token, err)
	}
	ok, err := srv.Projector.WaitFor(context.Background(), name, pos, 30*time.Second)
	if err != nil || !ok {
		t.Fatalf("the %s projection did not apply %s: %v", name, pos, err)
	}
}

// admWaitLog waits until the users projection has applied the last event in the log. The log is then
// also stable for readers: the log (and the admin API) shows an event only once no transaction older
// than it still runs anywhere in the PostgreSQL cluster, and the projection read it under that rule.
func admWaitLog(t *testing.T, srv *testserver.Server) {
	t.Helper()
	var last string
	err := srv.Pool.QueryRow(context.Background(),
		`SELECT transaction_id::text || '.' || "offset" FROM events ORDER BY transaction_id DESC, "offset" DESC LIMIT 1`).Scan(&last)
	if err != nil {
		t.Fatal(err)
	}
	admWait(t, srv, last)
}

type admProjection struct {
	Name       string `json:"name"`
	Checkpoint string `json:"checkpoint"`
	LagEvents  int64  `json:"lag_events"`
	Status     string `json:"status"`
}

// admProjections lists the projections and returns the users one.
func admProjections(t *testing.T, c *testserver.Client) admProjection {
	t.Helper()
	r := c.Do(http.MethodGet, "/api/v1/admin/projections", nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("admin projections: %d %s", r.StatusCode, r.Body)
	}
	var raw []map[string]any
	r.JSON(t, &raw)
	for _, p := range raw {
		keys := make([]string, 0, len(p))
		for k := range p {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, []string{"checkpoint", "lag_events", "name", "status"}) {
			t.Errorf("projection %v has keys %v, want name, checkpoint, lag_events, status", p, keys)
		}
	}
	var list []admProjection
	r.JSON(t, &list)
	for _, p := range list {
		if p.Name == "users" {
			if _, err := events.ParsePosition(p.Checkpoint); err != nil {
				t.Errorf("users checkpoint %q is not a log position: %v", p.Checkpoint, err)
			}
			if p.LagEvents < 0 {
				t.Errorf("users lag %d", p.LagEvents)
			}
			return p
		}
	}
	t.Fatalf("no users projection in %s", r.Body)
	return admProjection{}
}

func TestAdminEndpointsNeedAnAdmin(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	anon := srv.Client(t)
	member, _, _ := admNewMember(t, srv, "Member")
	admin, _ := admNewAdmin(t, srv)

	endpoints := []struct{ method, path string }{
		{http.MethodGet, "/api/v1/admin/projections"},
		{http.MethodPost, "/api/v1/admin/projections/users/replay"},
		{http.MethodPost, "/api/v1/admin/projections/users/verify"},
		{http.MethodPost, "/api/v1/admin/projections/all/verify"},
		{http.MethodGet, "/api/v1/admin/events"},
	}
	for _, e := range endpoints {
		opsProblem(t, anon.Do(e.method, e.path, nil), http.StatusUnauthorized, "unauthenticated")
		opsProblem(t, member.Do(e.method, e.path, nil), http.StatusForbidden, "forbidden")
	}
	// Unsafe admin requests need the CSRF token like any other.
	opsProblem(t, admin.Do(http.MethodPost, "/api/v1/admin/projections/users/replay", nil, "X-CSRF-Token", ""), http.StatusForbidden, "csrf")
	opsProblem(t, admin.Do(http.MethodPost, "/api/v1/admin/projections/users/verify", nil, "X-CSRF-Token", ""), http.StatusForbidden, "csrf")

	admWait(t, srv, admin.Token)
	users := admProjections(t, admin)
	// Instances on one database share each consumer group: one runs it, the others stand by.
	if users.Status != "running" && users.Status != "standby" {
		t.Errorf("users projection status %q, want running or standby", users.Status)
	}
}

// admDump is the whole users read model as JSON, ordered by id.
func admDump(t *testing.T, srv *testserver.Server) string {
	t.Helper()
	var dump string
	err := srv.Pool.QueryRow(context.Background(),
		`SELECT COALESCE(json_agg(p ORDER BY p.id)::text, '[]') FROM user_profiles p`).Scan(&dump)
	if err != nil {
		t.Fatal(err)
	}
	return dump
}

// admReads is what clients read from the users read model: each user by id, each user's own profile
// and every page of a directory search.
func admReads(t *testing.T, admin *testserver.Client, clients []*testserver.Client, ids []string) []string {
	t.Helper()
	var out []string
	get := func(c *testserver.Client, path string) []byte {
		t.Helper()
		r := c.Do(http.MethodGet, path, nil, "X-Consistency-Token", "")
		if r.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, r.StatusCode, r.Body)
		}
		return r.Body
	}
	for _, id := range ids {
		out = append(out, string(get(admin, "/api/v1/users/"+id)))
	}
	for _, c := range clients {
		out = append(out, string(get(c, "/api/v1/users/me")))
	}
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 20 {
			t.Fatal("search does not end")
		}
		body := get(admin, "/api/v1/users?q=replay&limit=2&cursor="+url.QueryEscape(cursor))
		out = append(out, string(body))
		var page struct {
			NextCursor *string `json:"next_cursor"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatal(err)
		}
		if page.NextCursor == nil {
			return out
		}
		cursor = *page.NextCursor
	}
}

type admEvent struct {
	Position      string          `json:"position"`
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	SchemaVersion int             `json:"schema_version"`
	StreamID      string          `json:"stream_id"`
	StreamType    string          `json:"stream_type"`
	Version       int64           `json:"version"`
	OccurredAt    string          `json:"occurred_at"`
	Data          json.RawMessage `json:"data"`
	Unreadable    string          `json:"unreadable"`
}

type admEventPage struct {
	Items      []admEvent `json:"items"`
	NextCursor *string    `json:"next_cursor"`
}

// admAllEvents pages through the whole log with limit and returns the events and the raw pages.
func admAllEvents(t *testing.T, admin *testserver.Client, limit int) ([]admEvent, []string) {
	t.Helper()
	var all []admEvent
	var raw []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("the event log pages do not end")
		}
		path := "/api/v1/admin/events?limit=" + strconv.Itoa(limit)
		if after != "" {
			path += "&after=" + url.QueryEscape(after)
		}
		r := admin.Do(http.MethodGet, path, nil)
		if r.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, r.StatusCode, r.Body)
		}
		raw = append(raw, string(r.Body))
		var keys map[string]json.RawMessage
		r.JSON(t, &keys)
		if _, ok := keys["next_cursor"]; !ok {
			t.Fatalf("page without next_cursor: %s", r.Body)
		}
		var page admEventPage
		r.JSON(t, &page)
		if len(page.Items) > limit {
			t.Fatalf("page of %d items with limit %d", len(page.Items), limit)
		}
		all = append(all, page.Items...)
		if page.NextCursor == nil {
			return all, raw
		}
		if len(page.Items) != limit {
			t.Errorf("a page with a next cursor has %d items, want %d", len(page.Items), limit)
		}
		if len(page.Items) == 0 || *page.NextCursor != page.Items[len(page.Items)-1].Position {
			t.Fatalf("next_cursor %q is not the position of the page's last event", *page.NextCursor)
		}
		after = *page.NextCursor
	}
}

func TestAdminReplayRebuildsTheUsersReadModel(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, pgtest.NewDatabase(t))
	admin, adminID := admNewAdmin(t, srv)

	var clients []*testserver.Client
	ids := []string{adminID}
	for i, name := range []string{"Replay Alpha", "replay beta", "Replay Gamma", "REPLAY delta", "Replay Epsilon"} {
		c, id, email := admNewMember(t, srv, name)
		clients = append(clients, c)
		ids = append(ids, id)
		switch i {
		case 0:
			r := c.Do(http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "Replay Zeta", "avatar_url": "https://example.com/a.png"})
			if r.StatusCode != http.StatusOK {
				t.Fatalf("patch: %d %s", r.StatusCode, r.Body)
			}
		case 1:
			c.LogIn(email, admPassword) // a second login: login_count 2
		case 2:
			r := c.Do(http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": admPassword, "new_password": "a new password"})
			if r.StatusCode != http.StatusNoContent {
				t.Fatalf("change password: %d %s", r.StatusCode, r.Body)
			}
			c.CSRF = r.Header.Get("X-CSRF-Token")
		}
	}
	clients = append(clients, admin)
	// The last command of all: its consistency token is the position of the log's last event.
	last := srv.Client(t)
	lastUser := last.Register(opsEmail("replay-last"), admPassword, "Replay Last")
	ids = append(ids, lastUser["id"].(string))
	admWait(t, srv, last.Token)

	log, _ := admAllEvents(t, admin, 200)
	if len(log) == 0 || log[len(log)-1].Position != last.Token {
		t.Fatalf("the last command's token %q is not the last event's position (%d events)", last.Token, len(log))
	}
	beforeDump := admDump(t, srv)
	beforeReads := admReads(t, admin, clients, ids)
	before := admProjections(t, admin)
	if before.Checkpoint != last.Token || before.LagEvents != 0 || before.Status != "running" {
		t.Errorf("before replay: %+v, want checkpoint %s, lag 0, running", before, last.Token)
	}

	// Damage the read model behind the projection's back: only a real rebuild from the log repairs it.
	if _, err := srv.Pool.Exec(context.Background(), `UPDATE user_profiles SET display_name = 'Damaged', name_key = 'damaged', login_count = login_count + 100, role = 'member'`); err != nil {
		t.Fatal(err)
	}
	if admDump(t, srv) == beforeDump {
		t.Fatal("set-up: the damage did not change the read model")
	}

	r := admin.Do(http.MethodPost, "/api/v1/admin/projections/users/replay", nil)
	if r.StatusCode != http.StatusAccepted {
		t.Fatalf("replay: %d %s", r.StatusCode, r.Body)
	}
	admWait(t, srv, log[len(log)-1].Position)

	if after := admDump(t, srv); after != beforeDump {
		t.Errorf("the rebuilt read model differs:\nbefore %s\n after %s", beforeDump, after)
	}
	afterReads := admReads(t, admin, clients, ids)
	if !slices.Equal(afterReads, beforeReads) {
		t.Errorf("reads differ after the replay:\nbefore %v\n after %v", beforeReads, afterReads)
	}
	// The status says "replaying" until the background catch-up has returned, a moment after its
	// last commit.
	after := admProjections(t, admin)
	for deadline := time.Now().Add(10 * time.Second); after.Status == "replaying" && time.Now().Before(deadline); {
		after = admProjections(t, admin)
	}
	if after.Checkpoint != before.Checkpoint || after.LagEvents != 0 || after.Status != "running" {
		t.Errorf("after replay: %+v, want %+v", after, before)
	}
}

func TestAdminReplayUnknownProjection(t *testing.T) {
	t.Parallel()
	// Its own database: it asserts a lag of zero, which other tests' writes would break.
	srv := testserver.Start(t, pgtest.NewDatabase(t))
	admin, _ := admNewAdmin(t, srv)
	opsProblem(t, admin.Do(http.MethodPost, "/api/v1/admin/projections/no-such-projection/replay", nil), http.StatusNotFound, "not-found")
	opsProblem(t, admin.Do(http.MethodPost, "/api/v1/admin/projections/"+strings.Repeat("x", 101)+"/replay", nil), http.StatusUnprocessableEntity, "validation")
	// Nothing was reset: the users projection carries on.
	admWait(t, srv, admin.Token)
	if p := admProjections(t, admin); p.Status != "running" || p.LagEvents != 0 {
		t.Errorf("users projection after unknown replays: %+v", p)
	}
}

// TestAdminProjectionStatusShowsFailure breaks the users read model under a running projection: the
// admin API reports the projection failing and its lag, and once the table is back the projection
// applies the event it failed on and runs again.
func TestAdminProjectionStatusShowsFailure(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, pgtest.NewDatabase(t))
	admin, _ := admNewAdmin(t, srv)
	admWait(t, srv, admin.Token)
	ctx := context.Background()
	if _, err := srv.Pool.Exec(ctx, `ALTER TABLE user_profiles RENAME TO user_profiles_away`); err != nil {
		t.Fatal(err)
	}
	other := srv.Client(t)
	other.Register(opsEmail("failing"), admPassword, "Failing")

	// Wait for the failure to show (a condition, not a fixed pause).
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	var p admProjection
poll:
	for {
		if p = admProjections(t, admin); strings.HasPrefix(p.Status, "failing") {
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			break poll
		}
	}
	if !strings.HasPrefix(p.Status, "failing") || p.LagEvents < 1 {
		t.Fatalf("users projection with its table gone: %+v, want failing with lag >= 1", p)
	}

	if _, err := srv.Pool.Exec(ctx, `ALTER TABLE user_profiles_away RENAME TO user_profiles`); err != nil {
		t.Fatal(err)
	}
	admWait(t, srv, other.Token)
	if p := admProjections(t, admin); p.Status != "running" || p.LagEvents != 0 || p.Checkpoint != other.Token {
		t.Errorf("after repair: %+v, want running, lag 0 at %s", p, other.Token)
	}
}

var admDotted = regexp.MustCompile(`^[a-z]+(\.[a-z_]+)+$`)

func TestAdminEventsPagesTheLog(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, pgtest.NewDatabase(t))
	admin, _ := admNewAdmin(t, srv)
	secretPasswords := []string{admPassword, "a brand new secret"}
	for i, name := range []string{"Events One", "Events Two", "Events Three"} {
		c, _, _ := admNewMember(t, srv, name)
		switch i {
		case 0:
			if r := c.Do(http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "Events Uno"}); r.StatusCode != http.StatusOK {
				t.Fatalf("patch: %d %s", r.StatusCode, r.Body)
			}
		case 1:
			r := c.Do(http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": admPassword, "new_password": secretPasswords[1]})
			if r.StatusCode != http.StatusNoContent {
				t.Fatalf("change password: %d %s", r.StatusCode, r.Body)
			}
		}
	}
	admWaitLog(t, srv)
	var total int
	var hashes int
	if err := srv.Pool.QueryRow(context.Background(), `SELECT count(*), count(*) FILTER (WHERE payload::text LIKE '%$argon2id$%') FROM events`).Scan(&total, &hashes); err != nil {
		t.Fatal(err)
	}
	if hashes < 5 {
		t.Fatalf("set-up: %d stored events hold a password hash, want the 4 registrations and 1 change", hashes)
	}

	all, pages := admAllEvents(t, admin, 3)
	if len(all) != total {
		t.Fatalf("paging with limit 3 gave %d events, the log has %d:\n%s", len(all), total, strings.Join(pages, "\n"))
	}
	for _, p := range pages {
		if strings.Contains(p, "$argon2id$") {
			t.Errorf("a page holds a password hash: %s", p)
		}
		for _, pw := range secretPasswords {
			if strings.Contains(p, pw) {
				t.Errorf("a page holds a password: %s", p)
			}
		}
	}

	types := map[string]int{}
	ids := map[string]bool{}
	versions := map[string]int64{}
	var prev events.Position
	for i, e := range all {
		pos, err := events.ParsePosition(e.Position)
		if err != nil {
			t.Fatalf("event %d: position %q: %v", i, e.Position, err)
		}
		if i > 0 && !prev.Less(pos) {
			t.Errorf("event %d at %s does not come after %s", i, pos, prev)
		}
		prev = pos
		if _, err := uuid.Parse(e.ID); err != nil || ids[e.ID] {
			t.Errorf("event %d: id %q is not a fresh UUID", i, e.ID)
		}
		ids[e.ID] = true
		if !admDotted.MatchString(e.Type) {
			t.Errorf("event %d: type %q is not a dotted name", i, e.Type)
		}
		types[e.Type]++
		if e.SchemaVersion < 1 {
			t.Errorf("event %d: schema_version %d", i, e.SchemaVersion)
		}
		if _, err := uuid.Parse(e.StreamID); err != nil {
			t.Errorf("event %d: stream_id %q", i, e.StreamID)
		}
		if e.StreamType != "user" {
			t.Errorf("event %d: stream_type %q", i, e.StreamType)
		}
		if e.Version != versions[e.StreamID]+1 {
			t.Errorf("event %d: version %d of stream %s follows %d", i, e.Version, e.StreamID, versions[e.StreamID])
		}
		versions[e.StreamID] = e.Version
		if at, err := time.Parse(time.RFC3339Nano, e.OccurredAt); err != nil || !strings.HasSuffix(e.OccurredAt, "Z") || time.Since(at) > time.Hour {
			t.Errorf("event %d: occurred_at %q is not a recent RFC 3339 UTC time", i, e.OccurredAt)
		}
		var data map[string]any
		if err := json.Unmarshal(e.Data, &data); err != nil {
			t.Errorf("event %d: data %s is not an object", i, e.Data)
		}
		if e.Type == "user.registered" || e.Type == "user.password_changed" {
			if h, ok := data["password_hash"]; ok && h != "[redacted]" {
				t.Errorf("event %d (%s): password_hash %v", i, e.Type, h)
			}
		}
		if e.Type == "user.registered" && (data["email"] == nil || data["display_name"] == nil) {
			t.Errorf("event %d: user.registered data %s lacks the email or display name", i, e.Data)
		}
	}
	for _, want := range []string{"user.registered", "user.logged_in", "user.role_changed", "user.profile_updated", "user.password_changed"} {
		if types[want] == 0 {
			t.Errorf("no %s event in the log (types %v)", want, types)
		}
	}
	if types["user.registered"] != 4 {
		t.Errorf("%d user.registered events, want 4", types["user.registered"])
	}

	// Without parameters: the first page of at most 50, here the whole log.
	r := admin.Do(http.MethodGet, "/api/v1/admin/events", nil)
	var first admEventPage
	r.JSON(t, &first)
	if r.StatusCode != http.StatusOK || len(first.Items) != total || first.NextCursor != nil {
		t.Errorf("default page: %d, %d items, next %v; want all %d and no cursor", r.StatusCode, len(first.Items), first.NextCursor, total)
	}
	// after= starts after that event.
	k := total / 2
	r = admin.Do(http.MethodGet, "/api/v1/admin/events?after="+url.QueryEscape(all[k].Position), nil)
	var rest admEventPage
	r.JSON(t, &rest)
	if len(rest.Items) != total-k-1 || rest.Items[0].ID != all[k+1].ID {
		t.Errorf("after %s: %d items starting %v, want %d starting %s", all[k].Position, len(rest.Items), rest.Items, total-k-1, all[k+1].ID)
	}
	// type= keeps one event type.
	r = admin.Do(http.MethodGet, "/api/v1/admin/events?type=user.registered", nil)
	var registered admEventPage
	r.JSON(t, &registered)
	if r.StatusCode != http.StatusOK || len(registered.Items) != 4 {
		t.Errorf("type=user.registered: %d, %d items, want the 4 registrations", r.StatusCode, len(registered.Items))
	}
	for _, e := range registered.Items {
		if e.Type != "user.registered" {
			t.Errorf("type=user.registered answered a %s", e.Type)
		}
	}
	// The last position: an empty last page.
	r = admin.Do(http.MethodGet, "/api/v1/admin/events?after="+url.QueryEscape(all[total-1].Position), nil)
	if !strings.Contains(string(r.Body), `"items":[]`) || !strings.Contains(string(r.Body), `"next_cursor":null`) {
		t.Errorf("after the last event: %s, want {\"items\":[],\"next_cursor\":null}", r.Body)
	}
}

// An event this binary cannot read (a newer binary's type or schema version, during a rolling
// deploy) is shown in its place with data null and why, and the pages go on past it.
func TestAdminEventsShowsUnreadableEventsAndPagesPastThem(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, pgtest.NewDatabase(t))
	admin, _ := admNewAdmin(t, srv)
	for _, typ := range []struct {
		name    string
		version int
	}{{"user.nickname_set", 1}, {"user.logged_in", 99}} {
		if _, err := srv.Pool.Exec(context.Background(), `INSERT INTO events (transaction_id, event_id, stream_id, stream_type,
				version, event_type, schema_version, occurred_at, payload, metadata)
			VALUES (pg_current_xact_id(), $1, $2, 'user', 1, $3, $4, now(), '{}', '{}')`,
			uuid.New(), uuid.New(), typ.name, typ.version); err != nil {
			t.Fatal(err)
		}
		admNewMember(t, srv, "After "+typ.name)
	}
	// The users projection stops at the unreadable events (it must not skip what a newer binary may
	// project): wait for the log itself to show every event instead, which it does once no older
	// transaction of the cluster runs.
	deadline := time.Now().Add(30 * time.Second)
	for visible := false; !visible; {
		if err := srv.Pool.QueryRow(context.Background(), `SELECT pg_snapshot_xmin(pg_current_snapshot()) >
			(SELECT max(transaction_id) FROM events)`).Scan(&visible); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the log's last events never became visible")
		}
	}
	var ids []string
	rows, err := srv.Pool.Query(context.Background(), `SELECT event_id::text FROM events ORDER BY transaction_id, "offset"`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if rows.Close(); rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	for _, limit := range []int{1, 2, 3, 50} {
		all, _ := admAllEvents(t, admin, limit)
		var got []string
		unreadable := 0
		for _, e := range all {
			got = append(got, e.ID)
			if (e.Unreadable != "") != (string(e.Data) == "null") {
				t.Fatalf("limit %d: %s has data %s and unreadable %q", limit, e.Type, e.Data, e.Unreadable)
			}
			if e.Unreadable != "" {
				unreadable++
				if e.Type != "user.nickname_set" && e.SchemaVersion != 99 {
					t.Fatalf("limit %d: readable %s v%d shown as unreadable: %s", limit, e.Type, e.SchemaVersion, e.Unreadable)
				}
			}
		}
		if !slices.Equal(got, ids) || unreadable != 2 {
			t.Fatalf("limit %d: pages hold %v (%d unreadable), want the log's %v and 2 unreadable", limit, got, unreadable, ids)
		}
	}
}

func TestAdminEventsRejectsBadParameters(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	admin, _ := admNewAdmin(t, srv)
	for _, q := range []string{"limit=0", "limit=-1", "limit=abc", "limit=1.5", "limit=1001", "limit="} {
		r := admin.Do(http.MethodGet, "/api/v1/admin/events?"+q, nil)
		if q == "limit=" {
			// An empty limit is no limit.
			if r.StatusCode != http.StatusOK {
				t.Errorf("%s: %d %s", q, r.StatusCode, r.Body)
			}
			continue
		}
		p := opsProblem(t, r, http.StatusUnprocessableEntity, "validation")
		if len(p.Errors) != 1 || p.Errors[0].Field != "limit" {
			t.Errorf("%s: errors %+v, want one on limit", q, p.Errors)
		}
	}
	p := opsProblem(t, admin.Do(http.MethodGet, "/api/v1/admin/events?type="+strings.Repeat("t", 101), nil), http.StatusUnprocessableEntity, "validation")
	if len(p.Errors) != 1 || p.Errors[0].Field != "type" {
		t.Errorf("long type: errors %+v, want one on type", p.Errors)
	}
	for _, after := range []string{"garbage", "1.2.3", "-1.5", "1.", ".1", "1.x"} {
		r := admin.Do(http.MethodGet, "/api/v1/admin/events?after="+url.QueryEscape(after), nil)
		p := opsProblem(t, r, http.StatusUnprocessableEntity, "validation")
		if len(p.Errors) != 1 || p.Errors[0].Field != "after" {
			t.Errorf("after=%s: errors %+v, want one on after", after, p.Errors)
		}
	}
}

// TestAdminEventsLimitFollowsListConvention: API.md, Conventions: "Lists take limit (default 50, max
// 200)"; GET /users answers limit=201 with 422 and the admin event log is such a list.
func TestAdminEventsLimitFollowsListConvention(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	admin, _ := admNewAdmin(t, srv)
	if r := admin.Do(http.MethodGet, "/api/v1/admin/events?limit=200", nil); r.StatusCode != http.StatusOK {
		t.Errorf("limit=200: %d %s", r.StatusCode, r.Body)
	}
	r := admin.Do(http.MethodGet, "/api/v1/admin/events?limit=201", nil)
	if r.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("limit=201: %d, want 422 validation (max 200 per API.md Conventions)", r.StatusCode)
	}
}

type admVerification struct {
	Name        string                  `json:"name"`
	Equal       bool                    `json:"equal"`
	Projections []admVerifiedProjection `json:"projections"`
}

type admVerifiedProjection struct {
	Name        string          `json:"name"`
	Checkpoint  string          `json:"checkpoint"`
	Events      int64           `json:"events"`
	ElapsedMS   int64           `json:"elapsed_ms"`
	Equal       bool            `json:"equal"`
	Differences []admDifference `json:"differences"`
}

type admDifference struct {
	Table            string           `json:"table"`
	OnlyLive         []map[string]any `json:"only_live"`
	OnlyLiveCount    int64            `json:"only_live_count"`
	OnlyRebuild      []map[string]any `json:"only_rebuild"`
	OnlyRebuildCount int64            `json:"only_rebuild_count"`
}

// admPosition parses a log position.
func admPosition(t *testing.T, s string) events.Position {
	t.Helper()
	p, err := events.ParsePosition(s)
	if err != nil {
		t.Fatalf("position %q: %v", s, err)
	}
	return p
}

// admVerify verifies name through the admin API and checks the answer's shape.
func admVerify(t *testing.T, admin *testserver.Client, name string) admVerification {
	t.Helper()
	r := admin.Do(http.MethodPost, "/api/v1/admin/projections/"+name+"/verify", nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("verify %s: %d %s", name, r.StatusCode, r.Body)
	}
	acctWantKeys(t, "verification", r.Body, "equal", "name", "projections")
	var raw struct {
		Projections []json.RawMessage `json:"projections"`
	}
	r.JSON(t, &raw)
	for _, p := range raw.Projections {
		acctWantKeys(t, "verified projection", p, "checkpoint", "differences", "elapsed_ms", "equal", "events", "name")
		var diffs struct {
			Differences []json.RawMessage `json:"differences"`
		}
		if err := json.Unmarshal(p, &diffs); err != nil {
			t.Fatal(err)
		}
		if diffs.Differences == nil {
			t.Errorf("verify %s: differences is not an array: %s", name, p)
		}
		for _, d := range diffs.Differences {
			acctWantKeys(t, "difference", d, "only_live", "only_live_count", "only_rebuild", "only_rebuild_count", "table")
		}
	}
	var v admVerification
	r.JSON(t, &v)
	if v.Name != name {
		t.Errorf("verify %s answered for %q", name, v.Name)
	}
	equal := true
	for _, p := range v.Projections {
		equal = equal && p.Equal
		if p.Equal != (len(p.Differences) == 0) {
			t.Errorf("verify %s: %s equal %v with %d differences", name, p.Name, p.Equal, len(p.Differences))
		}
		admPosition(t, p.Checkpoint)
	}
	if v.Equal != equal {
		t.Errorf("verify %s: equal %v, but the projections' are %+v", name, v.Equal, v.Projections)
	}
	return v
}

// TestAdminVerifyProjections verifies read models built by real commands, then one damaged behind the
// projection's back: verify reports the damaged row both as the live table holds it and as the log
// rebuilds it, and changes nothing.
func TestAdminVerifyProjections(t *testing.T) {
	t.Parallel()
	// Its own database: the damage below must not reach other tests.
	srv := testserver.Start(t, pgtest.NewDatabase(t))
	admin, _ := admNewAdmin(t, srv)
	alice, _, _ := admNewMember(t, srv, "Verify Alice")
	_, bobID, _ := admNewMember(t, srv, "Verify Bob")
	chat := chatCreateDirect(t, alice, bobID, http.StatusCreated)
	first := chatSend(t, alice, chat.ID, "first words", "verify-1", http.StatusCreated)
	chatSend(t, alice, chat.ID, "second words", "verify-2", http.StatusCreated)
	admWaitFor(t, srv, "chats", alice.Token)

	v := admVerify(t, admin, "chats")
	if !v.Equal || len(v.Projections) != 1 || v.Projections[0].Name != "chats" {
		t.Fatalf("verify chats before any damage: %+v", v)
	}
	sent := admPosition(t, alice.Token)
	if p := v.Projections[0]; p.Events < 5 || admPosition(t, p.Checkpoint).Less(sent) {
		t.Errorf("verify chats rebuilt %d events up to %s, want at least 5 up to %s or later", p.Events, p.Checkpoint, alice.Token)
	}
	all := admVerify(t, admin, "all")
	var names []string
	for _, p := range all.Projections {
		names = append(names, p.Name)
	}
	if !all.Equal || !slices.Equal(names, []string{"users", "chats", "payments"}) {
		t.Fatalf("verify all before any damage: %+v", all)
	}

	ctx := context.Background()
	if _, err := srv.Pool.Exec(ctx, `UPDATE chat_messages SET text = 'tampered' WHERE id = $1`, first.ID); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"chats", "all"} {
		v := admVerify(t, admin, name)
		if v.Equal {
			t.Fatalf("verify %s after damage: equal: %+v", name, v)
		}
		for _, p := range v.Projections {
			if p.Name != "chats" {
				if !p.Equal {
					t.Errorf("verify %s: %s differs though only chats was damaged: %+v", name, p.Name, p)
				}
				continue
			}
			if p.Equal || len(p.Differences) != 1 {
				t.Fatalf("verify %s: chats differences %+v, want chat_messages only", name, p.Differences)
			}
			d := p.Differences[0]
			if d.Table != "chat_messages" || d.OnlyLiveCount != 1 || d.OnlyRebuildCount != 1 || len(d.OnlyLive) != 1 || len(d.OnlyRebuild) != 1 {
				t.Fatalf("verify %s: chat_messages difference %+v, want the one damaged row on each side", name, d)
			}
			live, rebuilt := d.OnlyLive[0], d.OnlyRebuild[0]
			if live["id"] != first.ID || live["text"] != "tampered" || live["chat_id"] != chat.ID || live["seq"] != float64(first.Seq) {
				t.Errorf("verify %s: live row %v, want message %s with text tampered", name, live, first.ID)
			}
			if rebuilt["id"] != first.ID || rebuilt["text"] != "first words" {
				t.Errorf("verify %s: rebuilt row %v, want message %s with text %q", name, rebuilt, first.ID, "first words")
			}
		}
	}

	// Verify changed nothing: the damage is still there, and no scratch schema is left behind.
	var text string
	if err := srv.Pool.QueryRow(ctx, `SELECT text FROM chat_messages WHERE id = $1`, first.ID).Scan(&text); err != nil || text != "tampered" {
		t.Errorf("after verify the damaged row reads %q (%v)", text, err)
	}
	var scratch int
	if err := srv.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'verify\_%'`).Scan(&scratch); err != nil || scratch != 0 {
		t.Errorf("%d scratch schemas left behind (%v)", scratch, err)
	}
}

func TestAdminVerifyUnknownProjection(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	admin, _ := admNewAdmin(t, srv)
	opsProblem(t, admin.Do(http.MethodPost, "/api/v1/admin/projections/no-such-projection/verify", nil), http.StatusNotFound, "not-found")
	opsProblem(t, admin.Do(http.MethodPost, "/api/v1/admin/projections/"+strings.Repeat("x", 101)+"/verify", nil), http.StatusUnprocessableEntity, "validation")
}
