package config_test

import (
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"taki/infra/config"
)

// secret is a valid TAKI_SECRET: exactly the minimum length.
var secret = strings.Repeat("s", config.MinSecretLen)

// env returns a getenv over a map holding a valid secret plus kv (name, value pairs; a later pair wins).
func env(kv ...string) func(string) string {
	m := map[string]string{"TAKI_SECRET": secret}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := config.Load(env())
	if err != nil {
		t.Fatalf("Load with only TAKI_SECRET: %v", err)
	}
	checks := []struct {
		field     string
		got, want any
	}{
		{"DatabaseURL", c.DatabaseURL, "postgres://postgres@127.0.0.1:5432/taki?sslmode=disable"},
		{"DatabaseMaxConns", c.DatabaseMaxConns, 40},
		{"HTTPAddr", c.HTTPAddr, "127.0.0.1:8080"},
		{"Secret", string(c.Secret), secret},
		{"LogLevel", c.LogLevel, slog.LevelInfo},
		{"LogFormat", c.LogFormat, "json"},
		{"SessionIdle", c.SessionIdle, 30 * time.Minute},
		{"SessionAbsolute", c.SessionAbsolute, 8 * time.Hour},
		{"PaymentsProvider", c.PaymentsProvider, "sandbox"},
		{"SquareBaseURL", c.SquareBaseURL, ""},
		{"SquareAccessToken", c.SquareAccessToken, ""},
		{"SquareWebhookSignatureKey", c.SquareWebhookSignatureKey, ""},
		{"SquareWebhookURL", c.SquareWebhookURL, ""},
		{"ProjectionBatchSize", c.ProjectionBatchSize, 1000},
		{"ConsistencyWait", c.ConsistencyWait, 2 * time.Second},
		{"ShutdownTimeout", c.ShutdownTimeout, 15 * time.Second},
		{"LoginFailuresBeforeThrottle", c.LoginFailuresBeforeThrottle, 5},
		{"LoginThrottleWindow", c.LoginThrottleWindow, 15 * time.Minute},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("default %s = %#v, want %#v", ch.field, ch.got, ch.want)
		}
	}
	if c.CookieSecure || len(c.AllowedOrigins) != 0 {
		t.Errorf("cookie secure %v, origins %v: want false and none by default", c.CookieSecure, c.AllowedOrigins)
	}
}

// TestEveryVariable sets every TAKI_* variable to a non-default value and checks each lands in its field.
func TestEveryVariable(t *testing.T) {
	t.Parallel()
	longSecret := strings.Repeat("k", 64)
	c, err := config.Load(env(
		"TAKI_DATABASE_URL", " postgresql://app:pw@db.internal:6543/taki_prod?sslmode=require ",
		"TAKI_HTTP_ADDR", "0.0.0.0:9090",
		"TAKI_SECRET", longSecret,
		"TAKI_ALLOWED_ORIGINS", " https://app.example.com/ , http://localhost:3000,,",
		"TAKI_COOKIE_SECURE", "true",
		"TAKI_LOG_LEVEL", "debug",
		"TAKI_LOG_FORMAT", "text",
		"TAKI_PAYMENTS_PROVIDER", "square",
		"TAKI_SQUARE_BASE_URL", "https://connect.squareupsandbox.com",
		"TAKI_SQUARE_ACCESS_TOKEN", "EAAA-token",
		"TAKI_SQUARE_WEBHOOK_SIGNATURE_KEY", "sig-key",
		"TAKI_SQUARE_WEBHOOK_URL", "https://taki.example.com/api/v1/provider-webhooks/square",
		"TAKI_SESSION_IDLE", "10m",
		"TAKI_SESSION_ABSOLUTE", "2h",
		"TAKI_CONSISTENCY_WAIT", "750ms",
		"TAKI_SHUTDOWN_TIMEOUT", "1m",
		"TAKI_PROJECTION_BATCH_SIZE", "1000",
		"TAKI_DATABASE_MAX_CONNS", "64",
	))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"TAKI_DATABASE_URL", c.DatabaseURL, "postgresql://app:pw@db.internal:6543/taki_prod?sslmode=require"},
		{"TAKI_HTTP_ADDR", c.HTTPAddr, "0.0.0.0:9090"},
		{"TAKI_SECRET", string(c.Secret), longSecret},
		{"TAKI_ALLOWED_ORIGINS", c.AllowedOrigins, []string{"https://app.example.com", "http://localhost:3000"}},
		{"TAKI_COOKIE_SECURE", c.CookieSecure, true},
		{"TAKI_LOG_LEVEL", c.LogLevel, slog.LevelDebug},
		{"TAKI_LOG_FORMAT", c.LogFormat, "text"},
		{"TAKI_PAYMENTS_PROVIDER", c.PaymentsProvider, "square"},
		{"TAKI_SQUARE_BASE_URL", c.SquareBaseURL, "https://connect.squareupsandbox.com"},
		{"TAKI_SQUARE_ACCESS_TOKEN", c.SquareAccessToken, "EAAA-token"},
		{"TAKI_SQUARE_WEBHOOK_SIGNATURE_KEY", c.SquareWebhookSignatureKey, "sig-key"},
		{"TAKI_SQUARE_WEBHOOK_URL", c.SquareWebhookURL, "https://taki.example.com/api/v1/provider-webhooks/square"},
		{"TAKI_SESSION_IDLE", c.SessionIdle, 10 * time.Minute},
		{"TAKI_SESSION_ABSOLUTE", c.SessionAbsolute, 2 * time.Hour},
		{"TAKI_CONSISTENCY_WAIT", c.ConsistencyWait, 750 * time.Millisecond},
		{"TAKI_SHUTDOWN_TIMEOUT", c.ShutdownTimeout, time.Minute},
		{"TAKI_PROJECTION_BATCH_SIZE", c.ProjectionBatchSize, 1000},
		{"TAKI_DATABASE_MAX_CONNS", c.DatabaseMaxConns, 64},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s: got %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
}

func TestOtherAcceptedForms(t *testing.T) {
	t.Parallel()
	cases := []struct {
		kv    []string
		check func(config.Config) bool
	}{
		{[]string{"TAKI_COOKIE_SECURE", "false"}, func(c config.Config) bool { return !c.CookieSecure }},
		{[]string{"TAKI_COOKIE_SECURE", "1"}, func(c config.Config) bool { return c.CookieSecure }},
		{[]string{"TAKI_LOG_LEVEL", "WARN"}, func(c config.Config) bool { return c.LogLevel == slog.LevelWarn }},
		{[]string{"TAKI_LOG_LEVEL", "error"}, func(c config.Config) bool { return c.LogLevel == slog.LevelError }},
		{[]string{"TAKI_LOG_FORMAT", "json"}, func(c config.Config) bool { return c.LogFormat == "json" }},
		{[]string{"TAKI_HTTP_ADDR", ":8081"}, func(c config.Config) bool { return c.HTTPAddr == ":8081" }},
		{[]string{"TAKI_HTTP_ADDR", "[::1]:8081"}, func(c config.Config) bool { return c.HTTPAddr == "[::1]:8081" }},
		{[]string{"TAKI_PROJECTION_BATCH_SIZE", "1"}, func(c config.Config) bool { return c.ProjectionBatchSize == 1 }},
		{[]string{"TAKI_PROJECTION_BATCH_SIZE", "10000"}, func(c config.Config) bool { return c.ProjectionBatchSize == 10000 }},
		// Empty and blank values mean "unset": the default stays.
		{[]string{"TAKI_HTTP_ADDR", "  "}, func(c config.Config) bool { return c.HTTPAddr == "127.0.0.1:8080" }},
		{[]string{"TAKI_SESSION_IDLE", ""}, func(c config.Config) bool { return c.SessionIdle == 30*time.Minute }},
		// Idle may equal absolute.
		{[]string{"TAKI_SESSION_IDLE", "1h", "TAKI_SESSION_ABSOLUTE", "1h"}, func(c config.Config) bool { return c.SessionAbsolute == time.Hour }},
	}
	for _, tc := range cases {
		c, err := config.Load(env(tc.kv...))
		if err != nil {
			t.Errorf("%v: %v", tc.kv, err)
			continue
		}
		if !tc.check(c) {
			t.Errorf("%v: not applied: %+v", tc.kv, c)
		}
	}
}

// TestMalformedValueNamesItsVariable: every bad setting stops Load with a *config.Error naming exactly the
// variable that is wrong (and only that one: everything else in the environment is valid).
func TestMalformedValueNamesItsVariable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		want string   // the variable the error must name
		kv   []string // the environment besides a valid secret
	}{
		{"TAKI_DATABASE_URL", []string{"TAKI_DATABASE_URL", "mysql://root@127.0.0.1/taki"}},
		{"TAKI_DATABASE_URL", []string{"TAKI_DATABASE_URL", "postgres://127.0.0.1:5432"}},
		{"TAKI_DATABASE_URL", []string{"TAKI_DATABASE_URL", "postgres://127.0.0.1:5432/"}},
		{"TAKI_DATABASE_URL", []string{"TAKI_DATABASE_URL", "::not a url"}},
		{"TAKI_HTTP_ADDR", []string{"TAKI_HTTP_ADDR", "localhost"}},
		{"TAKI_HTTP_ADDR", []string{"TAKI_HTTP_ADDR", "127.0.0.1:"}},
		{"TAKI_HTTP_ADDR", []string{"TAKI_HTTP_ADDR", "127.0.0.1:http"}},
		{"TAKI_HTTP_ADDR", []string{"TAKI_HTTP_ADDR", "127.0.0.1:65536"}},
		{"TAKI_SECRET", []string{"TAKI_SECRET", ""}},
		{"TAKI_SECRET", []string{"TAKI_SECRET", "short"}},
		{"TAKI_ALLOWED_ORIGINS", []string{"TAKI_ALLOWED_ORIGINS", "app.example.com"}},
		{"TAKI_ALLOWED_ORIGINS", []string{"TAKI_ALLOWED_ORIGINS", "https://ok.example.com,ftp://files.example.com"}},
		{"TAKI_ALLOWED_ORIGINS", []string{"TAKI_ALLOWED_ORIGINS", "https://app.example.com/login"}},
		{"TAKI_COOKIE_SECURE", []string{"TAKI_COOKIE_SECURE", "yes"}},
		{"TAKI_LOG_LEVEL", []string{"TAKI_LOG_LEVEL", "loud"}},
		{"TAKI_LOG_FORMAT", []string{"TAKI_LOG_FORMAT", "xml"}},
		{"TAKI_PAYMENTS_PROVIDER", []string{"TAKI_PAYMENTS_PROVIDER", "stripe"}},
		{"TAKI_SQUARE_BASE_URL", []string{"TAKI_PAYMENTS_PROVIDER", "square", "TAKI_SQUARE_ACCESS_TOKEN", "t"}},
		{"TAKI_SQUARE_BASE_URL", []string{"TAKI_SQUARE_BASE_URL", "connect.squareup.com"}},
		{"TAKI_SQUARE_BASE_URL", []string{"TAKI_PAYMENTS_PROVIDER", "square", "TAKI_SQUARE_ACCESS_TOKEN", "t", "TAKI_SQUARE_BASE_URL", "ftp://x"}},
		{"TAKI_SQUARE_ACCESS_TOKEN", []string{"TAKI_PAYMENTS_PROVIDER", "square", "TAKI_SQUARE_BASE_URL", "https://connect.squareup.com"}},
		{"TAKI_SQUARE_WEBHOOK_URL", []string{"TAKI_PAYMENTS_PROVIDER", "square", "TAKI_SQUARE_BASE_URL", "https://connect.squareup.com", "TAKI_SQUARE_ACCESS_TOKEN", "t", "TAKI_SQUARE_WEBHOOK_SIGNATURE_KEY", "k"}},
		{"TAKI_SQUARE_WEBHOOK_SIGNATURE_KEY", []string{"TAKI_PAYMENTS_PROVIDER", "square", "TAKI_SQUARE_BASE_URL", "https://connect.squareup.com", "TAKI_SQUARE_ACCESS_TOKEN", "t", "TAKI_SQUARE_WEBHOOK_URL", "https://taki.example.com/hook"}},
		{"TAKI_SESSION_IDLE", []string{"TAKI_SESSION_IDLE", "soon"}},
		{"TAKI_SESSION_IDLE", []string{"TAKI_SESSION_IDLE", "0s"}},
		{"TAKI_SESSION_IDLE", []string{"TAKI_SESSION_IDLE", "-5m"}},
		{"TAKI_SESSION_IDLE", []string{"TAKI_SESSION_IDLE", "30"}},
		{"TAKI_SESSION_ABSOLUTE", []string{"TAKI_SESSION_ABSOLUTE", "forever"}},
		{"TAKI_SESSION_ABSOLUTE", []string{"TAKI_SESSION_ABSOLUTE", "10m"}}, // shorter than the 30 min idle default
		{"TAKI_CONSISTENCY_WAIT", []string{"TAKI_CONSISTENCY_WAIT", "2"}},
		{"TAKI_SHUTDOWN_TIMEOUT", []string{"TAKI_SHUTDOWN_TIMEOUT", "-1s"}},
		{"TAKI_PROJECTION_BATCH_SIZE", []string{"TAKI_PROJECTION_BATCH_SIZE", "0"}},
		{"TAKI_PROJECTION_BATCH_SIZE", []string{"TAKI_PROJECTION_BATCH_SIZE", "10001"}},
		{"TAKI_PROJECTION_BATCH_SIZE", []string{"TAKI_PROJECTION_BATCH_SIZE", "lots"}},
		{"TAKI_DATABASE_MAX_CONNS", []string{"TAKI_DATABASE_MAX_CONNS", "3"}},
		{"TAKI_DATABASE_MAX_CONNS", []string{"TAKI_DATABASE_MAX_CONNS", "many"}},
	}
	for _, tc := range cases {
		_, err := config.Load(env(tc.kv...))
		var ce *config.Error
		if !errors.As(err, &ce) {
			t.Errorf("%v: error %v (%T), want *config.Error", tc.kv, err, err)
			continue
		}
		if ce.Name != tc.want {
			t.Errorf("%v: error names %s, want %s (%v)", tc.kv, ce.Name, tc.want, err)
		}
		if ce.Reason == "" || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: %q is not one clear line naming %s", tc.kv, err.Error(), tc.want)
		}
	}
}

// TestMalformedWebhookURL: TAKI_SQUARE_WEBHOOK_URL is the URL Square signs (signature = HMAC over
// URL + body), so a malformed one makes every webhook fail verification at run time instead of
// stopping start-up.
func TestMalformedWebhookURL(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"not a url", "ftp://taki.example.com/hook", "/api/v1/provider-webhooks/square"} {
		_, err := config.Load(env("TAKI_SQUARE_WEBHOOK_URL", bad))
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Name != "TAKI_SQUARE_WEBHOOK_URL" {
			t.Errorf("TAKI_SQUARE_WEBHOOK_URL=%q: error %v, want a *config.Error naming TAKI_SQUARE_WEBHOOK_URL", bad, err)
		}
	}
}

func TestSecretLength(t *testing.T) {
	t.Parallel()
	short := strings.Repeat("x", config.MinSecretLen-1)
	_, err := config.Load(env("TAKI_SECRET", short))
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Name != "TAKI_SECRET" {
		t.Fatalf("31-byte secret: error %v, want *config.Error naming TAKI_SECRET", err)
	}
	if strings.Contains(err.Error(), short) {
		t.Errorf("the error %q repeats the secret", err)
	}
	if _, err := config.Load(env("TAKI_SECRET", short+"x")); err != nil {
		t.Errorf("32-byte secret refused: %v", err)
	}
	// Missing: named, with how to make one.
	_, err = config.Load(func(string) string { return "" })
	if !errors.As(err, &ce) || ce.Name != "TAKI_SECRET" {
		t.Fatalf("no secret: error %v, want *config.Error naming TAKI_SECRET", err)
	}
	if config.MinSecretLen < 32 {
		t.Errorf("MinSecretLen = %d, want at least 32", config.MinSecretLen)
	}
}

// TestLoadDoesNotTouchTheProcessEnvironment: Load reads only through getenv, so tests and flags can feed it.
func TestLoadDoesNotTouchTheProcessEnvironment(t *testing.T) {
	t.Setenv("TAKI_HTTP_ADDR", "not-an-address")
	c, err := config.Load(env())
	if err != nil {
		t.Fatalf("Load read the process environment: %v", err)
	}
	if c.HTTPAddr != "127.0.0.1:8080" {
		t.Errorf("HTTPAddr = %q", c.HTTPAddr)
	}
}

// TestMalformedOriginParts: an origin is scheme://host[:port] and nothing else (RFC 6454); browsers never
// send a query, fragment or credentials in Origin, so such an entry can never match and is a typo.
func TestMalformedOriginParts(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"https://app.example.com?x=1", "https://app.example.com#top", "https://user:pw@app.example.com"} {
		_, err := config.Load(env("TAKI_ALLOWED_ORIGINS", bad))
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Name != "TAKI_ALLOWED_ORIGINS" {
			t.Errorf("TAKI_ALLOWED_ORIGINS=%q: error %v, want a *config.Error naming TAKI_ALLOWED_ORIGINS", bad, err)
		}
	}
}
