package httpapi

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
)

func specJSON(t *testing.T) map[string]any {
	t.Helper()
	b, err := json.Marshal(Spec())
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("the spec is not valid JSON: %v", err)
	}
	return doc
}

func TestSpecIsOpenAPI31(t *testing.T) {
	t.Parallel()
	doc := specJSON(t)
	if doc["openapi"] != "3.1.0" {
		t.Errorf("openapi = %v", doc["openapi"])
	}
	info, _ := doc["info"].(map[string]any)
	if info["title"] == "" || info["version"] == "" {
		t.Errorf("info %v", info)
	}
}

func TestSpecOperations(t *testing.T) {
	t.Parallel()
	d := Spec()
	ids := map[string]string{}
	paramRe := regexp.MustCompile(`\{([^}]+)\}`)
	for path, item := range d.Paths {
		if !strings.HasPrefix(path, "/") {
			t.Errorf("path %q is not absolute", path)
		}
		for method, o := range item {
			where := strings.ToUpper(method) + " " + path
			if !slices.Contains([]string{"get", "put", "post", "delete", "patch"}, method) {
				t.Errorf("%s: method not in lower-case OpenAPI form", where)
			}
			if len(o.Responses) == 0 {
				t.Errorf("%s has no response", where)
			}
			hasSuccess := false
			for code := range o.Responses {
				if code[0] == '1' || code[0] == '2' {
					hasSuccess = true
				}
			}
			if !hasSuccess {
				t.Errorf("%s has no success response", where)
			}
			if o.Summary == "" || len(o.Tags) == 0 {
				t.Errorf("%s lacks a summary or a tag", where)
			}
			if prev, dup := ids[o.OperationID]; dup || o.OperationID == "" {
				t.Errorf("%s: operationId %q empty or also used by %s", where, o.OperationID, prev)
			}
			ids[o.OperationID] = where

			// Every template variable is a required path parameter, and no path parameter is extra.
			var inTemplate []string
			for _, m := range paramRe.FindAllStringSubmatch(path, -1) {
				inTemplate = append(inTemplate, m[1])
			}
			var declared []string
			for _, p := range o.Parameters {
				if p.Schema == nil {
					t.Errorf("%s: parameter %s has no schema", where, p.Name)
				}
				if p.In == "path" {
					declared = append(declared, p.Name)
					if !p.Required {
						t.Errorf("%s: path parameter %s not required", where, p.Name)
					}
				}
			}
			if !slices.Equal(inTemplate, declared) {
				t.Errorf("%s: template names %v, path parameters %v", where, inTemplate, declared)
			}
		}
	}
}

// Every $ref points at a schema the document defines.
func TestSpecRefsResolve(t *testing.T) {
	t.Parallel()
	doc := specJSON(t)
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	var walk func(v any)
	count := 0
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if r, ok := v["$ref"].(string); ok {
				count++
				name, found := strings.CutPrefix(r, "#/components/schemas/")
				if _, ok := schemas[name]; !found || !ok {
					t.Errorf("dangling $ref %q", r)
				}
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	if count < 50 {
		t.Errorf("only %d $refs: the schemas are not being used", count)
	}
}

func TestSpecSchemasFollowAPIContract(t *testing.T) {
	t.Parallel()
	d := Spec()
	props := func(name string) []string {
		s := d.Components.Schemas[name]
		if s == nil {
			t.Fatalf("no schema %s", name)
		}
		var out []string
		for k := range s.Properties {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	want := map[string]string{
		"User":             "avatar_url created_at display_name email id role",
		"Profile":          "avatar_url created_at display_name email id login_count role",
		"PublicUser":       "avatar_url display_name id",
		"Session":          "csrf_token expires_at user",
		"SessionInfo":      "created_at current id ip last_seen_at user_agent",
		"WSToken":          "expires_at token",
		"RegisterRequest":  "display_name email password",
		"LoginRequest":     "email password",
		"UpdateProfile":    "avatar_url display_name",
		"ChangePassword":   "current_password new_password",
		"Problem":          "detail errors status title type",
		"ProjectionStatus": "checkpoint lag_events name status",
		"Chat":             "created_at id last_message last_seq members title type unread_count",
		"Message":          "chat_id client_msg_id deleted edited_at id read_by_count sender_id sent_at seq text",
		"Payment":          "amount_minor created_at currency description failure_code id provider_payment_id refunded_minor status updated_at",
		"BillingCurrency":  "currency net_minor paid_minor payments_count refunded_minor",
	}
	for name, fields := range want {
		if got := strings.Join(props(name), " "); got != fields {
			t.Errorf("%s properties = %q, want %q", name, got, fields)
		}
	}
	// Request bodies reject unknown fields, as the server does.
	for _, name := range []string{"RegisterRequest", "LoginRequest", "UpdateProfile", "ChangePassword", "SendMessage", "CreatePayment"} {
		if ap := d.Components.Schemas[name].AdditionalProperties; ap == nil || *ap {
			t.Errorf("%s allows unknown fields", name)
		}
	}
	// Public operations say so explicitly; the rest inherit the session requirement.
	post := d.Paths["/api/v1/users"]["post"]
	if b, _ := json.Marshal(post); !strings.Contains(string(b), `"security":[]`) {
		t.Errorf("POST /users is not marked public: %s", b)
	}
	if s := d.Paths["/api/v1/chats"]["post"].Security; len(s) != 1 || s[0][schemeCSRF] == nil {
		t.Errorf("POST /chats does not require the CSRF token: %v", s)
	}
}

func routeStrings(d *Document) []string {
	var out []string
	for _, r := range d.Routes() {
		out = append(out, r.String())
	}
	return out
}

func TestSpecCoversEveryRoute(t *testing.T) {
	t.Parallel()
	// API.md's route list, written out independently of Spec.
	want := []string{
		"POST /api/v1/users", "POST /api/v1/sessions", "GET /api/v1/sessions/current", "DELETE /api/v1/sessions/current",
		"GET /api/v1/sessions", "DELETE /api/v1/sessions/:id", "GET /api/v1/users/me", "PATCH /api/v1/users/me",
		"PUT /api/v1/users/me/password", "GET /api/v1/users", "GET /api/v1/users/:id", "POST /api/v1/ws-tokens",
		"POST /api/v1/chats", "GET /api/v1/chats", "GET /api/v1/chats/:id", "PATCH /api/v1/chats/:id",
		"POST /api/v1/chats/:id/members", "DELETE /api/v1/chats/:id/members/:user_id", "POST /api/v1/chats/:id/messages",
		"GET /api/v1/chats/:id/messages", "PATCH /api/v1/chats/:id/messages/:message_id",
		"DELETE /api/v1/chats/:id/messages/:message_id", "POST /api/v1/chats/:id/read",
		"POST /api/v1/payments", "GET /api/v1/payments", "GET /api/v1/payments/:id", "POST /api/v1/payments/:id/refunds",
		"GET /api/v1/billing/summary", "POST /api/v1/provider-webhooks/square",
		"GET /api/v1/admin/projections", "POST /api/v1/admin/projections/:name/replay", "POST /api/v1/admin/projections/:name/verify",
		"GET /api/v1/admin/events",
		"GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.json", "GET /ws",
	}
	got := routeStrings(Spec())
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("routes differ:\n got %v\nwant %v", got, want)
	}
}

// The contract itself: shared/API.md stands beside the repository in development and in CI.
func TestSpecMatchesAPIMarkdown(t *testing.T) {
	t.Parallel()
	f, err := os.Open(filepath.Join("..", "..", "..", "shared", "API.md"))
	if err != nil {
		t.Fatalf("API.md is not beside the repository (../shared/API.md): %v", err)
	}
	defer f.Close()
	row := regexp.MustCompile("^\\| `(GET|POST|PUT|PATCH|DELETE) (/[^ `?]*)")
	inDoc := map[string]bool{}
	for _, r := range routeStrings(Spec()) {
		inDoc[r] = true
	}
	found := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := row.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		path := m[2]
		if !strings.HasPrefix(path, "/api/v1/") && !slices.Contains([]string{"/healthz", "/readyz", "/metrics", "/openapi.json"}, path) {
			path = "/api/v1" + path // the tables list API routes relative to the base path
		}
		r := m[1] + " " + ginPath(path)
		found++
		if !inDoc[r] {
			t.Errorf("API.md lists %s; the spec does not", r)
		}
	}
	if found < 30 {
		t.Errorf("only %d routes parsed from API.md", found)
	}
}

func TestRoutesConvertsTemplates(t *testing.T) {
	t.Parallel()
	d := &Document{Paths: map[string]PathItem{
		"/a/{id}/b/{user_id}": {"get": {}, "delete": {}},
		"/a":                  {"post": {}},
	}}
	got := routeStrings(d)
	want := []string{"POST /a", "DELETE /a/:id/b/:user_id", "GET /a/:id/b/:user_id"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// Registering every documented route on gin proves the paths coexist in its router (static segments
// beside parameters, one parameter name per position), and that CompareRoutes sees them as equal.
// Every documented path converts to a gin route that gin accepts (gin panics on conflicting wildcards,
// e.g. /chats/:id beside /chats/:chat_id) and converts back to the same document path.
func TestSpecRoutesRegisterOnGinAndRoundTrip(t *testing.T) {
	t.Parallel()
	d := Spec()
	e := gin.New()
	for _, r := range d.Routes() {
		e.Handle(r.Method, r.Path, func(c *gin.Context) {})
	}
	missingInDoc, missingInRouter := CompareRoutes(e.Routes(), d)
	if len(missingInDoc) != 0 || len(missingInRouter) != 0 {
		t.Errorf("missing in doc %v, missing in router %v", missingInDoc, missingInRouter)
	}
}

func TestCompareRoutesFindsDifferences(t *testing.T) {
	t.Parallel()
	d := &Document{Paths: map[string]PathItem{
		"/api/v1/users/{id}": {"get": {}},
		"/api/v1/chats":      {"get": {}, "post": {}},
	}}
	e := gin.New()
	noop := func(c *gin.Context) {}
	e.GET("/api/v1/users/:id", noop)
	e.GET("/api/v1/chats", noop)
	e.DELETE("/api/v1/chats/:id", noop)
	e.GET("/debug/vars", noop)
	missingInDoc, missingInRouter := CompareRoutes(e.Routes(), d)
	if want := []string{"DELETE /api/v1/chats/:id", "GET /debug/vars"}; !slices.Equal(missingInDoc, want) {
		t.Errorf("missingInDoc = %v, want %v", missingInDoc, want)
	}
	if want := []string{"POST /api/v1/chats"}; !slices.Equal(missingInRouter, want) {
		t.Errorf("missingInRouter = %v, want %v", missingInRouter, want)
	}
}

func TestServeSpec(t *testing.T) {
	t.Parallel()
	e := gin.New()
	e.GET("/openapi.json", ServeSpec())
	w := serve(e, httptest.NewRequest(http.MethodGet, "/openapi.json", nil))
	if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("got %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" || len(doc.Paths["/api/v1/users/{id}"]) != 1 {
		t.Errorf("served document: openapi %q, %d paths", doc.OpenAPI, len(doc.Paths))
	}
}

// Spec returns a fresh document: a caller changing its copy cannot change what others see.
func TestSpecIsFresh(t *testing.T) {
	t.Parallel()
	a := Spec()
	delete(a.Paths, "/healthz")
	if _, ok := Spec().Paths["/healthz"]; !ok {
		t.Error("Spec shares state between calls")
	}
}

// Every route whose command loads an aggregate (handlers' aggregate.load) may meet an event a newer
// binary wrote and answer 503 unavailable with Retry-After; no other route documents that. The list
// follows each route to its command's handler, independently of Spec.
func TestSpecDocumentsUnreadableAggregatesExactly(t *testing.T) {
	t.Parallel()
	want := []string{
		"POST /api/v1/sessions", "PATCH /api/v1/users/me", "PUT /api/v1/users/me/password",
		"POST /api/v1/chats", "PATCH /api/v1/chats/{id}", "POST /api/v1/chats/{id}/members",
		"DELETE /api/v1/chats/{id}/members/{user_id}", "POST /api/v1/chats/{id}/messages",
		"PATCH /api/v1/chats/{id}/messages/{message_id}", "DELETE /api/v1/chats/{id}/messages/{message_id}",
		"POST /api/v1/chats/{id}/read",
		"POST /api/v1/payments", "POST /api/v1/payments/{id}/refunds", "POST /api/v1/provider-webhooks/square",
	}
	var got []string
	for path, item := range Spec().Paths {
		for method, o := range item {
			r := o.Responses["503"]
			if r == nil || !strings.Contains(r.Description, "newer version of the service wrote (unavailable)") {
				continue
			}
			got = append(got, strings.ToUpper(method)+" "+path)
			if r.Headers["Retry-After"] == nil {
				t.Errorf("%s %s: 503 without Retry-After", strings.ToUpper(method), path)
			}
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("routes documenting an unreadable aggregate:\n got %v\nwant %v", got, want)
	}
	if d := Spec().Paths["/api/v1/payments"]["post"].Responses["503"].Description; !strings.Contains(d, "(provider-unavailable)") {
		t.Errorf("POST /api/v1/payments 503 lost the provider's open circuit: %q", d)
	}
}
