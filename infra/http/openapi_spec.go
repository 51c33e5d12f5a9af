package httpapi

import (
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// Spec returns the OpenAPI 3.1 document of every route of API.md. It builds a fresh document on each
// call, so callers may change theirs freely.
func Spec() *Document {
	b := newSpecBuilder()
	addUsersAndSessions(b)
	addChatsAndMessages(b)
	addPaymentsAndBilling(b)
	addAdmin(b)
	addOperations(b)
	return b.doc
}

const (
	jsonType         = "application/json"
	schemaRefPrefix  = "#/components/schemas/"
	schemeSession    = "sessionCookie"
	schemeCSRF       = "csrfToken"
	schemeWSToken    = "wsToken"
	tagUsers         = "users"
	tagSessions      = "sessions"
	tagChats         = "chats"
	tagMessages      = "messages"
	tagPayments      = "payments"
	tagBilling       = "billing"
	tagWebhooks      = "webhooks"
	tagAdmin         = "admin"
	tagOperations    = "operations"
	tagRealtime      = "realtime"
	consistencyToken = "X-Consistency-Token"
)

// access is who may call an operation; it decides its security requirement and its 401/403 answers.
type access int

const (
	member access = iota // a session (cookie); unsafe methods also need the CSRF token
	public               // no credentials (or credentials of another kind, such as a webhook signature)
	admin                // a session of an admin
)

// op is the compact description of one route that the builder expands into an Operation with the
// answers every route of its kind shares (400/413/415/422 for a body, 401, 403 for CSRF, ...).
type op struct {
	method, path     string
	id, summary, tag string
	description      string
	access           access
	params           []Parameter
	body             *Schema
	ok               []answer
	fails            []answer
	security         []SecurityRequirement // overrides what access implies
	// decidesOn names what the command loads to decide ("the chat"): its events may include one a
	// newer binary wrote during a rolling deploy, which this one cannot read, and the command then
	// answers 503 until a newer instance serves it.
	decidesOn            string
	noConsistencyHeaders bool
	noValidation         bool // the body is not a command, so there is no 422
}

// answer is one documented response; a nil schema means no body.
type answer struct {
	status      int
	description string
	schema      *Schema
	contentType string
	retryAfter  bool // the answer carries Retry-After
}

type specBuilder struct{ doc *Document }

func newSpecBuilder() *specBuilder {
	return &specBuilder{doc: &Document{
		OpenAPI: "3.1.0",
		Info: Info{
			Title:   "Taki API",
			Version: "1",
			Description: "Messenger with payments. Bodies are JSON (415 otherwise), at most 1 MiB (413), and " +
				"unknown fields are rejected (400). Errors are RFC 9457 application/problem+json. Every " +
				"response carries X-Request-Id, echoing the client's when it sent a valid one. Successful " +
				"commands carry X-Consistency-Token; a query sent with it waits (up to 2 s) for that write " +
				"and otherwise answers with X-Consistency-Stale: true. Lists take limit (default 50, max 200) " +
				"and an opaque cursor and answer {items, next_cursor}.",
		},
		Tags: []Tag{
			{Name: tagUsers, Description: "Accounts and the user directory"},
			{Name: tagSessions, Description: "Login, logout and session management"},
			{Name: tagChats, Description: "Direct and group chats and their members"},
			{Name: tagMessages, Description: "Messages in a chat"},
			{Name: tagPayments, Description: "Payments and refunds"},
			{Name: tagBilling, Description: "Billing summaries"},
			{Name: tagWebhooks, Description: "Payment provider callbacks"},
			{Name: tagAdmin, Description: "Projections and the event log (admins)"},
			{Name: tagOperations, Description: "Health, readiness, metrics and this document"},
			{Name: tagRealtime, Description: "WebSocket"},
		},
		Security: []SecurityRequirement{{schemeSession: {}}},
		Paths:    map[string]PathItem{},
		Components: Components{
			Schemas: schemas(),
			SecuritySchemes: map[string]*SecurityScheme{
				schemeSession: {Type: "apiKey", In: "cookie", Name: "taki_session",
					Description: "Server-side session id, set by POST /api/v1/sessions."},
				schemeCSRF: {Type: "apiKey", In: "header", Name: "X-CSRF-Token",
					Description: "Synchronizer token returned by login; required with the cookie on POST, PUT, PATCH and DELETE."},
				schemeWSToken: {Type: "apiKey", In: "query", Name: "token",
					Description: "Short-lived JWT from POST /api/v1/ws-tokens."},
			},
		},
	}}
}

func (b *specBuilder) add(o op) {
	unsafe := o.method != http.MethodGet && o.method != http.MethodHead
	api := strings.HasPrefix(o.path, "/api/v1/")
	consistency := api && !o.noConsistencyHeaders

	operation := &Operation{
		OperationID: o.id,
		Summary:     o.summary,
		Description: o.description,
		Tags:        []string{o.tag},
		Parameters:  append(pathParams(o.path), o.params...),
		Responses:   map[string]*Response{},
		Security:    o.security,
	}
	if o.security == nil {
		switch {
		case o.access == public:
			operation.Security = []SecurityRequirement{}
		case unsafe:
			operation.Security = []SecurityRequirement{{schemeSession: {}, schemeCSRF: {}}}
		}
	}
	if consistency && !unsafe {
		operation.Parameters = append(operation.Parameters, Parameter{
			Name: consistencyToken, In: "header", Schema: str(),
			Description: "A token from an earlier command: wait (up to 2 s) until this read reflects it.",
		})
	}
	if o.body != nil {
		operation.RequestBody = &RequestBody{Required: true, Content: map[string]MediaType{jsonType: {Schema: o.body}}}
	}

	for _, a := range o.ok {
		r := response(a)
		if consistency && unsafe {
			r.Headers = map[string]*Header{consistencyToken: {
				Schema: str(), Description: "Send it back on a query to read this write.",
			}}
		}
		if consistency && !unsafe {
			r.Headers = map[string]*Header{"X-Consistency-Stale": {
				Schema:      &Schema{Type: SchemaType{"string"}, Enum: []string{"true"}},
				Description: "Present when the requested consistency token was not reached in time.",
			}}
		}
		operation.Responses[strconv.Itoa(a.status)] = r
	}

	var fails []answer
	if o.body != nil {
		fails = append(fails,
			answer{status: 400, description: "Malformed JSON, wrong types, trailing data or unknown fields"},
			answer{status: 413, description: "Body over 1 MiB"},
			answer{status: 415, description: "Body is not application/json"},
		)
		if !o.noValidation {
			fails = append(fails, answer{status: 422, description: "Invalid fields (validation), one entry per field in errors"})
		}
	}
	if o.access != public {
		fails = append(fails, answer{status: 401, description: "No valid session (unauthenticated)"})
	}
	switch {
	case o.access == admin:
		fails = append(fails, answer{status: 403, description: "Not an admin (forbidden), or missing CSRF token (csrf)"})
	case o.access == member && unsafe:
		fails = append(fails, answer{status: 403, description: "Missing or wrong X-CSRF-Token (csrf)"})
	}
	fails = append(fails, o.fails...) // later entries win: an operation's own wording beats the generic one
	if o.decidesOn != "" {
		fails = append(fails, unreadable(o.decidesOn, fails))
	}
	for _, a := range fails {
		operation.Responses[strconv.Itoa(a.status)] = problemResponse(a)
	}
	operation.Responses["default"] = problemResponse(answer{description: "Unexpected error (internal) or service unavailable (unavailable)"})

	item := b.doc.Paths[o.path]
	if item == nil {
		item = PathItem{}
		b.doc.Paths[o.path] = item
	}
	item[strings.ToLower(o.method)] = operation
}

// unreadable is the 503 of a command whose aggregate holds an event this binary cannot read. A 503
// the operation already documents has another cause (an open provider circuit), so both are named.
func unreadable(what string, earlier []answer) answer {
	a := answer{status: http.StatusServiceUnavailable, retryAfter: true,
		description: what + " holds events a newer version of the service wrote (unavailable)"}
	for _, e := range earlier {
		if e.status == a.status {
			a.description = e.description + ", or " + a.description
		}
	}
	a.description = strings.ToUpper(a.description[:1]) + a.description[1:]
	return a
}

func response(a answer) *Response {
	r := &Response{Description: a.description}
	if a.schema != nil {
		ct := a.contentType
		if ct == "" {
			ct = jsonType
		}
		r.Content = map[string]MediaType{ct: {Schema: a.schema}}
	}
	return r
}

func problemResponse(a answer) *Response {
	s := a.schema
	if s == nil {
		s = ref("Problem")
	}
	r := &Response{Description: a.description, Content: map[string]MediaType{problemContentType: {Schema: s}}}
	if a.retryAfter {
		r.Headers = map[string]*Header{"Retry-After": {
			Schema: integer(), Description: "Seconds to wait before trying again.",
		}}
	}
	return r
}

// pathParams declares every {name} of a path template, so template and parameters cannot disagree.
func pathParams(path string) []Parameter {
	var params []Parameter
	for seg := range strings.SplitSeq(path, "/") {
		if !strings.HasPrefix(seg, "{") || !strings.HasSuffix(seg, "}") {
			continue
		}
		name := seg[1 : len(seg)-1]
		p := Parameter{Name: name, In: "path", Required: true, Schema: uuidSchema()}
		switch name {
		case "id":
			p.Description = "Id of the resource"
		case "user_id":
			p.Description = "Id of the member"
		case "message_id":
			p.Description = "Id of the message"
		case "name":
			p.Description = "Name of the projection (users, chats, payments, ...)"
			p.Schema = str()
		}
		params = append(params, p)
	}
	return params
}

// Parameters shared by several operations.

func limitParam() Parameter {
	s := integer()
	s.Minimum, s.Maximum, s.Default = ptr(int64(1)), ptr(int64(200)), 50
	return Parameter{Name: "limit", In: "query", Schema: s, Description: "Page size"}
}

func cursorParam() Parameter {
	return Parameter{Name: "cursor", In: "query", Schema: str(),
		Description: "Opaque cursor from the previous page's next_cursor"}
}

func idempotencyKeyParam() Parameter {
	return Parameter{Name: "Idempotency-Key", In: "header", Required: true, Schema: strLen(1, 64),
		Description: "Same key and body replays the first answer; same key, other body: 422 idempotency-key-reused. Kept at least 24 h."}
}

// Schema helpers.

func ptr[T any](v T) *T { return &v }

func ref(name string) *Schema { return &Schema{Ref: schemaRefPrefix + name} }

func str() *Schema { return &Schema{Type: SchemaType{"string"}} }

func strLen(minLen, maxLen int) *Schema {
	s := str()
	s.MinLength, s.MaxLength = ptr(minLen), ptr(maxLen)
	return s
}

func strMin(minLen int) *Schema {
	s := str()
	s.MinLength = ptr(minLen)
	return s
}

func uuidSchema() *Schema { return &Schema{Type: SchemaType{"string"}, Format: "uuid"} }

func timestamp() *Schema {
	return &Schema{Type: SchemaType{"string"}, Format: "date-time", Description: "RFC 3339, UTC"}
}

func integer() *Schema { return &Schema{Type: SchemaType{"integer"}, Format: "int64"} }

func nonNegative() *Schema {
	s := integer()
	s.Minimum = ptr(int64(0))
	return s
}

func boolean() *Schema { return &Schema{Type: SchemaType{"boolean"}} }

func enum(values ...string) *Schema { return &Schema{Type: SchemaType{"string"}, Enum: values} }

func array(items *Schema) *Schema { return &Schema{Type: SchemaType{"array"}, Items: items} }

func described(s *Schema, d string) *Schema {
	s.Description = d
	return s
}

// nullable allows null besides s: a $ref cannot carry siblings in every tool, so it becomes anyOf.
func nullable(s *Schema) *Schema {
	if s.Ref != "" {
		return &Schema{AnyOf: []*Schema{s, {Type: SchemaType{"null"}}}}
	}
	s.Type = append(s.Type, "null")
	return s
}

// object is a response object: every property is always present (required), and clients must accept
// properties added later, as API.md only ever adds.
func object(props map[string]*Schema) *Schema {
	required := make([]string, 0, len(props))
	for name := range props {
		required = append(required, name)
	}
	sort.Strings(required)
	return &Schema{Type: SchemaType{"object"}, Properties: props, Required: required}
}

// input is a request body: unknown fields are rejected with 400, hence additionalProperties false.
func input(props map[string]*Schema, required ...string) *Schema {
	return &Schema{Type: SchemaType{"object"}, Properties: props, Required: required, AdditionalProperties: ptr(false)}
}

func page(items *Schema) *Schema {
	return object(map[string]*Schema{
		"items":       array(items),
		"next_cursor": described(nullable(str()), "Cursor of the next page; null on the last page"),
	})
}

func schemas() map[string]*Schema {
	email := &Schema{Type: SchemaType{"string"}, Format: "email"}
	password := strLen(8, 128)
	displayName := strLen(1, 64)
	avatarURL := func() *Schema { return nullable(&Schema{Type: SchemaType{"string"}, Format: "uri"}) }
	role := enum("member", "admin")
	currency := &Schema{Type: SchemaType{"string"}, Pattern: "^[A-Z]{3}$", Description: "ISO 4217 code"}
	amount := described(integer(), "Amount in minor units of the currency")
	positiveAmount := described(integer(), "Amount in minor units of the currency")
	positiveAmount.Minimum = ptr(int64(1))
	messageText := strLen(1, 4000)

	fieldError := object(map[string]*Schema{"field": str(), "message": str()})
	problem := &Schema{
		Type:        SchemaType{"object"},
		Description: "RFC 9457 problem details",
		Properties: map[string]*Schema{
			"type":   described(&Schema{Type: SchemaType{"string"}, Format: "uri"}, "https://taki.dev/problems/<slug>"),
			"title":  str(),
			"status": integer(),
			"detail": str(),
			"errors": described(array(ref("FieldError")), "Present on validation failures: one entry per bad field"),
		},
		Required: []string{"type", "title", "status"},
	}

	user := object(map[string]*Schema{
		"id": uuidSchema(), "email": email, "display_name": str(), "avatar_url": avatarURL(), "role": role,
		"created_at": timestamp(),
	})
	profile := object(map[string]*Schema{
		"id": uuidSchema(), "email": email, "display_name": str(), "avatar_url": avatarURL(), "role": role,
		"created_at": timestamp(), "login_count": nonNegative(),
	})
	publicUser := object(map[string]*Schema{"id": uuidSchema(), "display_name": str(), "avatar_url": avatarURL()})
	session := object(map[string]*Schema{
		"user": ref("User"), "csrf_token": described(str(), "Send as X-CSRF-Token on unsafe requests"),
		"expires_at": timestamp(),
	})
	sessionInfo := object(map[string]*Schema{
		"id":           described(uuidSchema(), "Public id of the session, never the cookie value"),
		"created_at":   timestamp(),
		"last_seen_at": timestamp(),
		"user_agent":   str(),
		"ip":           str(),
		"current":      described(boolean(), "Whether this is the session making the request"),
	})
	sessionList := object(map[string]*Schema{"items": array(ref("SessionInfo"))})
	wsToken := object(map[string]*Schema{
		"token":      described(str(), "JWT (HS256, aud taki-ws, sid the public id of the session that asked for it), valid at most 5 minutes; the socket it opens is closed (1008) when that session ends"),
		"expires_at": timestamp(),
	})

	chatMember := object(map[string]*Schema{"user_id": uuidSchema(), "role": role, "last_read_seq": nonNegative()})
	chat := object(map[string]*Schema{
		"id":           uuidSchema(),
		"type":         enum("direct", "group"),
		"title":        described(nullable(str()), "Group title; null for direct chats"),
		"created_at":   timestamp(),
		"members":      array(ref("ChatMember")),
		"last_seq":     nonNegative(),
		"unread_count": described(nonNegative(), "Messages of others above the caller's last_read_seq"),
		"last_message": nullable(ref("Message")),
	})
	message := object(map[string]*Schema{
		"id":            uuidSchema(),
		"chat_id":       uuidSchema(),
		"seq":           described(nonNegative(), "Per chat, from 1, gapless and increasing"),
		"sender_id":     uuidSchema(),
		"text":          described(str(), "Empty when deleted"),
		"client_msg_id": str(),
		"sent_at":       timestamp(),
		"edited_at":     nullable(timestamp()),
		"deleted":       boolean(),
		"read_by_count": described(nonNegative(), "Other members whose last_read_seq >= seq"),
	})
	messagePage := object(map[string]*Schema{
		"items":    described(array(ref("Message")), "In ascending seq"),
		"has_more": boolean(),
	})

	payment := object(map[string]*Schema{
		"id":                  uuidSchema(),
		"status":              enum("pending", "completed", "failed", "partially_refunded", "refunded"),
		"amount_minor":        amount,
		"currency":            currency,
		"refunded_minor":      described(nonNegative(), "Sum of completed refunds, in minor units"),
		"description":         str(),
		"failure_code":        described(nullable(str()), "Provider code of a failed payment, such as GENERIC_DECLINE"),
		"provider_payment_id": nullable(str()),
		"created_at":          timestamp(),
		"updated_at":          timestamp(),
	})
	refund := object(map[string]*Schema{"id": uuidSchema(), "payment_id": uuidSchema(), "status": str(), "amount_minor": amount})
	billingCurrency := object(map[string]*Schema{
		"currency":       currency,
		"payments_count": described(nonNegative(), "Completed payments"),
		"paid_minor":     described(nonNegative(), "Completed payments, also those refunded later"),
		"refunded_minor": described(nonNegative(), "Completed refunds"),
		"net_minor":      described(integer(), "paid_minor - refunded_minor"),
	})
	billing := object(map[string]*Schema{"currencies": array(ref("BillingCurrency"))})

	projection := object(map[string]*Schema{
		"name":       str(),
		"checkpoint": described(str(), "Position of the last applied event"),
		"lag_events": nonNegative(),
		"status":     str(),
	})
	rows := func(d string) *Schema {
		return described(array(&Schema{Type: SchemaType{"object"}, AdditionalProperties: ptr(true)}), d)
	}
	tableDifference := object(map[string]*Schema{
		"table":              str(),
		"only_live":          rows("Up to 20 rows, as JSON objects, that the live table holds and the rebuild does not"),
		"only_live_count":    described(nonNegative(), "Every such row"),
		"only_rebuild":       rows("Up to 20 rows, as JSON objects, that the rebuild holds and the live table does not"),
		"only_rebuild_count": described(nonNegative(), "Every such row"),
	})
	verifiedProjection := object(map[string]*Schema{
		"name":        str(),
		"checkpoint":  described(str(), "Position of the last applied event: the rebuild replays the log up to it"),
		"events":      described(nonNegative(), "Events of the log, up to the checkpoint, read into the rebuild"),
		"elapsed_ms":  nonNegative(),
		"equal":       boolean(),
		"differences": described(array(ref("TableDifference")), "Only the tables that differ; empty when equal"),
	})
	verification := object(map[string]*Schema{
		"name":        described(str(), "The projection asked for, or all"),
		"equal":       described(boolean(), "Whether every verified projection is equal"),
		"projections": array(ref("VerifiedProjection")),
	})
	event := &Schema{
		Type:        SchemaType{"object"},
		Description: "One entry of the event log",
		Properties: map[string]*Schema{
			"position":       described(str(), "Opaque, ordered position in the log"),
			"id":             uuidSchema(),
			"type":           described(str(), "Dotted name, such as message.sent"),
			"schema_version": integer(),
			"stream_id":      str(),
			"stream_type":    str(),
			"version":        integer(),
			"occurred_at":    timestamp(),
			"correlation_id": str(),
			"causation_id":   str(),
			"user_id":        nullable(str()),
			"data": described(nullable(&Schema{Type: SchemaType{"object"}, AdditionalProperties: ptr(true)}),
				"The event's payload, secrets redacted; null when this binary cannot read the event"),
			"unreadable": described(str(), "Present when this binary cannot read the event (a newer binary's type or "+
				"schema version, or a damaged payload): why. Readers of the log show it in its place and read on past it"),
		},
		Required: []string{"position", "id", "type", "data"},
	}
	readiness := &Schema{AllOf: []*Schema{ref("Problem"), {
		Type: SchemaType{"object"},
		Properties: map[string]*Schema{"checks": array(object(map[string]*Schema{
			"name": str(), "status": enum("ok", "failed"), "error": str(),
		}))},
	}}}
	readiness.AllOf[1].Properties["checks"].Items.Required = []string{"name", "status"}

	return map[string]*Schema{
		"Problem":           problem,
		"FieldError":        fieldError,
		"ReadinessProblem":  readiness,
		"User":              user,
		"Profile":           profile,
		"PublicUser":        publicUser,
		"Session":           session,
		"SessionInfo":       sessionInfo,
		"SessionList":       sessionList,
		"WSToken":           wsToken,
		"PublicUserPage":    page(ref("PublicUser")),
		"ChatMember":        chatMember,
		"Chat":              chat,
		"ChatPage":          page(ref("Chat")),
		"Message":           message,
		"MessagePage":       messagePage,
		"Payment":           payment,
		"PaymentPage":       page(ref("Payment")),
		"Refund":            refund,
		"BillingCurrency":   billingCurrency,
		"BillingSummary":    billing,
		"ProjectionStatus":  projection,
		"Event":             event,
		"EventPage":         page(ref("Event")),
		"RegisterRequest":   input(map[string]*Schema{"email": email, "password": password, "display_name": displayName}, "email", "password", "display_name"),
		"LoginRequest":      input(map[string]*Schema{"email": str(), "password": str()}, "email", "password"),
		"UpdateProfile":     input(map[string]*Schema{"display_name": strLen(1, 64), "avatar_url": avatarURL()}),
		"ChangePassword":    input(map[string]*Schema{"current_password": str(), "new_password": strLen(8, 128)}, "current_password", "new_password"),
		"CreateDirectChat":  input(map[string]*Schema{"type": {Type: SchemaType{"string"}, Const: "direct"}, "member_id": uuidSchema()}, "type", "member_id"),
		"CreateGroupChat":   input(map[string]*Schema{"type": {Type: SchemaType{"string"}, Const: "group"}, "title": strMin(1), "member_ids": array(uuidSchema())}, "type", "title", "member_ids"),
		"RenameChat":        input(map[string]*Schema{"title": strMin(1)}, "title"),
		"AddMember":         input(map[string]*Schema{"user_id": uuidSchema()}, "user_id"),
		"SendMessage":       input(map[string]*Schema{"text": messageText, "client_msg_id": described(strLen(1, 64), "Client-chosen id; resending it replays the first message")}, "text", "client_msg_id"),
		"EditMessage":       input(map[string]*Schema{"text": strLen(1, 4000)}, "text"),
		"MarkRead":          input(map[string]*Schema{"up_to_seq": nonNegative()}, "up_to_seq"),
		"CreatePayment":     input(map[string]*Schema{"amount_minor": positiveAmount, "currency": currency, "source_id": described(str(), "Card nonce, such as cnon:card-nonce-ok"), "description": str()}, "amount_minor", "currency", "source_id", "description"),
		"CreateRefund":      input(map[string]*Schema{"amount_minor": positiveAmount}, "amount_minor"),
		"ProviderEvent":     {Type: SchemaType{"object"}, AdditionalProperties: ptr(true), Description: "The provider's event, verified by its signature"},
		"ProjectionList":    array(ref("ProjectionStatus")),
		"HealthStatus":      object(map[string]*Schema{"status": enum("ok")}),
		"ReadyStatus":       object(map[string]*Schema{"status": enum("ready")}),
		"CreateChatRequest": {OneOf: []*Schema{ref("CreateDirectChat"), ref("CreateGroupChat")}},
		"OpenAPIDocument":   {Type: SchemaType{"object"}, Description: "This document"},

		// POST /api/v1/admin/projections/{name}/verify
		"ProjectionVerification": verification,
		"VerifiedProjection":     verifiedProjection,
		"TableDifference":        tableDifference,
	}
}

func addUsersAndSessions(b *specBuilder) {
	b.add(op{method: "POST", path: "/api/v1/users", id: "registerUser", summary: "Register a user", tag: tagUsers,
		access: public, body: ref("RegisterRequest"),
		ok: []answer{{status: 201, description: "The new user", schema: ref("User")}},
		fails: []answer{
			{status: 409, description: "The email is already registered (email-taken)"},
			{status: 422, description: "Invalid email, password (8-128 chars) or display_name (1-64 chars)"},
		}})
	b.add(op{method: "POST", path: "/api/v1/sessions", id: "login", summary: "Log in", tag: tagSessions,
		decidesOn:   "the account",
		description: "Sets a new taki_session cookie (HttpOnly, SameSite=Lax) and returns the CSRF token.",
		access:      public, body: ref("LoginRequest"),
		ok: []answer{{status: 200, description: "Logged in", schema: ref("Session")}},
		fails: []answer{
			{status: 401, description: "Unknown email or wrong password (one answer for both)"},
			{status: 429, description: "Too many failed logins for this email (rate-limited)", retryAfter: true},
		}})
	b.add(op{method: "GET", path: "/api/v1/sessions/current", id: "getCurrentSession", summary: "The caller's session",
		tag: tagSessions, noConsistencyHeaders: true,
		ok: []answer{{status: 200, description: "The session", schema: ref("Session")}}})
	b.add(op{method: "DELETE", path: "/api/v1/sessions/current", id: "logout", summary: "Log out", tag: tagSessions,
		description: "Destroys the session server-side and clears the cookie.", noConsistencyHeaders: true,
		ok: []answer{{status: 204, description: "Logged out"}}})
	b.add(op{method: "GET", path: "/api/v1/sessions", id: "listSessions", summary: "The caller's sessions", tag: tagSessions,
		noConsistencyHeaders: true,
		ok:                   []answer{{status: 200, description: "Own sessions", schema: ref("SessionList")}}})
	b.add(op{method: "DELETE", path: "/api/v1/sessions/{id}", id: "revokeSession", summary: "Revoke a session",
		tag: tagSessions, noConsistencyHeaders: true,
		ok:    []answer{{status: 204, description: "Revoked at once"}},
		fails: []answer{{status: 404, description: "No such session of the caller (not-found)"}}})
	b.add(op{method: "GET", path: "/api/v1/users/me", id: "getProfile", summary: "The caller's profile", tag: tagUsers,
		ok: []answer{{status: 200, description: "Profile", schema: ref("Profile")}}})
	b.add(op{method: "PATCH", path: "/api/v1/users/me", id: "updateProfile", summary: "Change the caller's profile",
		tag: tagUsers, body: ref("UpdateProfile"), decidesOn: "the account",
		ok: []answer{{status: 200, description: "Profile", schema: ref("Profile")}}})
	b.add(op{method: "PUT", path: "/api/v1/users/me/password", id: "changePassword", summary: "Change the password",
		tag: tagUsers, body: ref("ChangePassword"), decidesOn: "the account",
		description: "Revokes every other session and re-issues this one (new cookie and CSRF token).",
		ok:          []answer{{status: 204, description: "Changed"}},
		fails:       []answer{{status: 422, description: "Wrong current_password or invalid new_password (8-128 chars)"}}})
	b.add(op{method: "GET", path: "/api/v1/users", id: "searchUsers", summary: "Search the user directory", tag: tagUsers,
		params: []Parameter{
			{Name: "q", In: "query", Schema: str(), Description: "Display name prefix"},
			limitParam(), cursorParam(),
		},
		ok: []answer{{status: 200, description: "A page of users", schema: ref("PublicUserPage")}}})
	b.add(op{method: "GET", path: "/api/v1/users/{id}", id: "getUser", summary: "A user's public profile", tag: tagUsers,
		ok:    []answer{{status: 200, description: "The user", schema: ref("PublicUser")}},
		fails: []answer{{status: 404, description: "No such user (not-found)"}}})
	b.add(op{method: "POST", path: "/api/v1/ws-tokens", id: "createWSToken", summary: "Get a WebSocket token",
		tag: tagSessions, noConsistencyHeaders: true,
		ok: []answer{{status: 201, description: "A token for GET /ws?token=", schema: ref("WSToken")}}})
}

func addChatsAndMessages(b *specBuilder) {
	notMember := answer{status: 404, description: "No such chat, or the caller is not a member (not-found)"}
	b.add(op{method: "POST", path: "/api/v1/chats", id: "createChat", summary: "Start a direct or group chat", tag: tagChats,
		body: ref("CreateChatRequest"), decidesOn: "the direct chat or the other member's account",
		ok: []answer{
			{status: 201, description: "The new chat; the creator of a group is its admin", schema: ref("Chat")},
			{status: 200, description: "The direct chat these two users already have", schema: ref("Chat")},
		},
		fails: []answer{{status: 404, description: "A member does not exist (not-found)"}}})
	b.add(op{method: "GET", path: "/api/v1/chats", id: "listChats", summary: "The caller's chats", tag: tagChats,
		description: "Most recent activity first.", params: []Parameter{limitParam(), cursorParam()},
		ok: []answer{{status: 200, description: "A page of chats", schema: ref("ChatPage")}}})
	b.add(op{method: "GET", path: "/api/v1/chats/{id}", id: "getChat", summary: "A chat", tag: tagChats,
		ok:    []answer{{status: 200, description: "The chat", schema: ref("Chat")}},
		fails: []answer{notMember}})
	b.add(op{method: "PATCH", path: "/api/v1/chats/{id}", id: "renameChat", summary: "Rename a group", tag: tagChats,
		body: ref("RenameChat"), decidesOn: "the chat",
		ok: []answer{{status: 200, description: "The chat", schema: ref("Chat")}},
		fails: []answer{notMember,
			{status: 403, description: "Not a group admin (forbidden), or missing CSRF token (csrf)"}}})
	b.add(op{method: "POST", path: "/api/v1/chats/{id}/members", id: "addChatMember", summary: "Add a member to a group",
		tag: tagChats, body: ref("AddMember"), decidesOn: "the chat or the added user's account",
		ok: []answer{{status: 204, description: "Added"}},
		fails: []answer{notMember,
			{status: 403, description: "Not a group admin (forbidden), or missing CSRF token (csrf)"},
			{status: 409, description: "Not a group chat (conflict)"}}})
	b.add(op{method: "DELETE", path: "/api/v1/chats/{id}/members/{user_id}", id: "removeChatMember",
		summary: "Remove a member, or leave", tag: tagChats, decidesOn: "the chat",
		ok: []answer{{status: 204, description: "Removed"}},
		fails: []answer{notMember,
			{status: 403, description: "Neither a group admin nor the member itself (forbidden), or missing CSRF token (csrf)"},
			{status: 409, description: "Not a group chat, or the group's only admin leaving while others remain (conflict)"}}})
	b.add(op{method: "POST", path: "/api/v1/chats/{id}/messages", id: "sendMessage", summary: "Send a message",
		tag: tagMessages, body: ref("SendMessage"), decidesOn: "the chat",
		ok: []answer{
			{status: 201, description: "The new message", schema: ref("Message")},
			{status: 200, description: "The message first sent with this client_msg_id (replay)", schema: ref("Message")},
		},
		fails: []answer{notMember, {status: 422, description: "Invalid text (1-4000 chars) or client_msg_id"}}})
	seq := func(name, d string) Parameter {
		return Parameter{Name: name, In: "query", Schema: nonNegative(), Description: d}
	}
	b.add(op{method: "GET", path: "/api/v1/chats/{id}/messages", id: "listMessages", summary: "Messages of a chat",
		tag: tagMessages, description: "Items in ascending seq; without bounds, the latest page.",
		params: []Parameter{
			seq("before_seq", "Only messages with a smaller seq"),
			seq("after_seq", "Only messages with a larger seq"),
			limitParam(),
		},
		ok:    []answer{{status: 200, description: "A page of messages", schema: ref("MessagePage")}},
		fails: []answer{notMember}})
	b.add(op{method: "PATCH", path: "/api/v1/chats/{id}/messages/{message_id}", id: "editMessage", summary: "Edit a message",
		tag: tagMessages, body: ref("EditMessage"), decidesOn: "the chat",
		ok: []answer{{status: 200, description: "The message", schema: ref("Message")}},
		fails: []answer{notMember,
			{status: 403, description: "Not the sender (forbidden), or missing CSRF token (csrf)"}}})
	b.add(op{method: "DELETE", path: "/api/v1/chats/{id}/messages/{message_id}", id: "deleteMessage",
		summary: "Delete a message", tag: tagMessages, decidesOn: "the chat",
		description: "The message stays in history with deleted: true and text \"\".",
		ok:          []answer{{status: 204, description: "Deleted"}},
		fails: []answer{notMember,
			{status: 403, description: "Neither the sender nor a group admin (forbidden), or missing CSRF token (csrf)"}}})
	b.add(op{method: "POST", path: "/api/v1/chats/{id}/read", id: "markChatRead", summary: "Move the read cursor",
		tag: tagMessages, description: "The cursor only moves forward.", body: ref("MarkRead"), decidesOn: "the chat",
		ok:    []answer{{status: 204, description: "Done"}},
		fails: []answer{notMember}})
}

func addPaymentsAndBilling(b *specBuilder) {
	b.add(op{method: "POST", path: "/api/v1/payments", id: "createPayment", summary: "Pay", tag: tagPayments,
		decidesOn: "the payment first requested with this Idempotency-Key",
		body:      ref("CreatePayment"), params: []Parameter{idempotencyKeyParam()},
		ok: []answer{{status: 201, description: "The payment; its status may still be pending", schema: ref("Payment")}},
		fails: []answer{
			{status: 422, description: "Invalid fields (validation), or the Idempotency-Key was used with another body (idempotency-key-reused)"},
			{status: 503, description: "The provider's circuit is open (provider-unavailable)", retryAfter: true},
		}})
	b.add(op{method: "GET", path: "/api/v1/payments", id: "listPayments", summary: "The caller's payments", tag: tagPayments,
		description: "Newest first.", params: []Parameter{limitParam(), cursorParam()},
		ok: []answer{{status: 200, description: "A page of payments", schema: ref("PaymentPage")}}})
	b.add(op{method: "GET", path: "/api/v1/payments/{id}", id: "getPayment", summary: "A payment", tag: tagPayments,
		ok:    []answer{{status: 200, description: "The payment", schema: ref("Payment")}},
		fails: []answer{{status: 404, description: "No such payment of the caller (not-found)"}}})
	b.add(op{method: "POST", path: "/api/v1/payments/{id}/refunds", id: "createRefund", summary: "Refund a payment",
		decidesOn: "the payment",
		tag:       tagPayments, body: ref("CreateRefund"), params: []Parameter{idempotencyKeyParam()},
		ok: []answer{{status: 201, description: "The refund", schema: ref("Refund")}},
		fails: []answer{
			{status: 404, description: "No such payment of the caller (not-found)"},
			{status: 409, description: "More than the remaining amount, or the payment is not completed (conflict)"},
			{status: 422, description: "Invalid fields (validation), or the Idempotency-Key was used with another body (idempotency-key-reused)"},
			{status: 503, description: "The provider's circuit is open (provider-unavailable)", retryAfter: true},
		}})
	b.add(op{method: "GET", path: "/api/v1/billing/summary", id: "getBillingSummary", summary: "Totals per currency",
		tag: tagBilling,
		ok:  []answer{{status: 200, description: "The summary", schema: ref("BillingSummary")}}})
	b.add(op{method: "POST", path: "/api/v1/provider-webhooks/square", id: "squareWebhook",
		decidesOn: "the payment",
		summary:   "Square webhook", tag: tagWebhooks, access: public, noValidation: true, noConsistencyHeaders: true,
		description: "Authenticated by x-square-hmacsha256-signature (base64 HMAC-SHA256 over the notification URL " +
			"and the body). An event_id seen before is acknowledged and ignored.",
		params: []Parameter{{Name: "x-square-hmacsha256-signature", In: "header", Required: true, Schema: str(),
			Description: "Signature of the notification"}},
		body: ref("ProviderEvent"),
		ok:   []answer{{status: 200, description: "Acknowledged"}},
		fails: []answer{
			{status: 401, description: "Missing or bad signature (unauthenticated)"},
			{status: 400, description: "Not a provider event"},
		}})
}

func addAdmin(b *specBuilder) {
	b.add(op{method: "GET", path: "/api/v1/admin/projections", id: "listProjections", summary: "Projection status",
		tag: tagAdmin, access: admin, noConsistencyHeaders: true,
		ok: []answer{{status: 200, description: "Every projection, including users, chats and payments",
			schema: ref("ProjectionList")}}})
	b.add(op{method: "POST", path: "/api/v1/admin/projections/{name}/replay", id: "replayProjection",
		summary: "Rebuild a projection from the event log", tag: tagAdmin, access: admin, noConsistencyHeaders: true,
		ok:    []answer{{status: 202, description: "Replay started"}},
		fails: []answer{{status: 404, description: "No such projection (not-found)"}}})
	b.add(op{method: "POST", path: "/api/v1/admin/projections/{name}/verify", id: "verifyProjection",
		summary: "Diff a projection's read model against a rebuild", tag: tagAdmin, access: admin, noConsistencyHeaders: true,
		description: "name is a projection or all. Rebuilds each read model from the event log up to its checkpoint " +
			"into temporary tables and compares them with the live tables both ways, in a snapshot where both are at " +
			"the same checkpoint; the live read model is neither changed nor locked. The answer comes when the " +
			"rebuild is done: tens of seconds for a million events.",
		ok:    []answer{{status: 200, description: "The comparison; equal is false when any table differs", schema: ref("ProjectionVerification")}},
		fails: []answer{{status: 404, description: "No such projection (not-found)"}}})
	b.add(op{method: "GET", path: "/api/v1/admin/events", id: "listEvents", summary: "The event log", tag: tagAdmin,
		access: admin, noConsistencyHeaders: true,
		params: []Parameter{
			{Name: "after", In: "query", Schema: str(), Description: "Only events after this position"},
			limitParam(),
		},
		ok: []answer{{status: 200, description: "A page of events, in log order", schema: ref("EventPage")}}})
}

func addOperations(b *specBuilder) {
	b.add(op{method: "GET", path: "/healthz", id: "healthz", summary: "Liveness", tag: tagOperations, access: public,
		ok: []answer{{status: 200, description: "The process runs", schema: ref("HealthStatus")}}})
	b.add(op{method: "GET", path: "/readyz", id: "readyz", summary: "Readiness", tag: tagOperations, access: public,
		description: "Ready when the database answers, migrations are current and the subscribers run.",
		ok:          []answer{{status: 200, description: "Ready", schema: ref("ReadyStatus")}},
		fails: []answer{{status: 503, description: "Not ready: the failed checks and why (unavailable)",
			schema: ref("ReadinessProblem")}}})
	b.add(op{method: "GET", path: "/metrics", id: "metrics", summary: "Prometheus metrics", tag: tagOperations,
		access: public,
		ok: []answer{{status: 200, description: "Prometheus text exposition format", schema: str(),
			contentType: "text/plain; version=0.0.4"}}})
	b.add(op{method: "GET", path: "/openapi.json", id: "openapi", summary: "This document", tag: tagOperations,
		access: public,
		ok:     []answer{{status: 200, description: "OpenAPI 3.1 document", schema: ref("OpenAPIDocument")}}})
	b.add(op{method: "GET", path: "/ws", id: "websocket", summary: "Open a WebSocket", tag: tagRealtime,
		description: "Identified by ?token= (from POST /api/v1/ws-tokens), or by the session cookie when the Origin " +
			"is allowed. Frames are described in API.md, Real time. resync_required also arrives mid-stream, with " +
			"the position of an event this server cannot deliver (one a newer version wrote, during a rolling " +
			"deploy): reload through the API; live frames follow, and ?since= may resume from that position.",
		security: []SecurityRequirement{{schemeWSToken: {}}, {schemeSession: {}}},
		params: []Parameter{
			{Name: "since", In: "query", Schema: str(),
				Description: "Last position seen: replay every later event first, then live ones; one that cannot " +
					"be served gets resync_required first"},
		},
		ok: []answer{{status: 101, description: "Switching to the WebSocket protocol"}},
		fails: []answer{
			{status: 401, description: "No credentials (unauthenticated)"},
			{status: 403, description: "Origin not allowed (forbidden)"},
		}})
}
