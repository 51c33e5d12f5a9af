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
	pos, err := events.ParsePosition(token)
	if err != nil {
		t.Fatalf("consistency token %q: %v", token, err)
	}
	ok, err := srv.Projector.WaitFor(context.Background(), "users", pos, 30*time.Second)
	if err != nil || !ok {
		t.Fatalf("the users projection did not apply %s: %v", pos, err)
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
		{http.MethodGet, "/api/v1/admin/events"},
	}
	for _, e := range endpoints {
		opsProblem(t, anon.Do(e.method, e.path, nil), http.StatusUnauthorized, "unauthenticated")
		opsProblem(t, member.Do(e.method, e.path, nil), http.StatusForbidden, "forbidden")
	}
	// Unsafe admin requests need the CSRF token like any other.
	opsProblem(t, admin.Do(http.MethodPost, "/api/v1/admin/projections/users/replay", nil, "X-CSRF-Token", ""), http.StatusForbidden, "csrf")

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
	after := admProjections(t, admin)
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
