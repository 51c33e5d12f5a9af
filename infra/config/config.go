// Package config reads Taki's settings from TAKI_* environment variables (flags override them in cmd/taki).
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config is every setting of a Taki process. The zero value is not usable: build it with Load.
type Config struct {
	DatabaseURL      string
	DatabaseMaxConns int
	HTTPAddr         string
	Secret           []byte
	AllowedOrigins   []string
	CookieSecure     bool
	LogLevel         slog.Level
	LogFormat        string
	SessionIdle      time.Duration
	SessionAbsolute  time.Duration
	PaymentsProvider string

	SquareBaseURL               string
	SquareAccessToken           string
	SquareWebhookSignatureKey   string
	SquareWebhookURL            string
	ProjectionBatchSize         int
	ConsistencyWait             time.Duration
	ShutdownTimeout             time.Duration
	LoginFailuresBeforeThrottle int
	LoginThrottleWindow         time.Duration
}

// Error names the one setting that stopped start-up, so the operator reads one clear line.
type Error struct {
	Name   string
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("setting %s: %s", e.Name, e.Reason) }

// MinSecretLen keeps HMAC keys (JWTs, CSRF) out of brute-force range.
const MinSecretLen = 32

// Load reads the configuration through getenv (os.Getenv in production, a map in tests).
func Load(getenv func(string) string) (Config, error) {
	c := Config{}
	c.setDefaults()
	if err := c.read(getenv); err != nil {
		return Config{}, err
	}
	if err := c.validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func (c *Config) setDefaults() {
	c.DatabaseURL = "postgres://postgres@127.0.0.1:5432/taki?sslmode=disable"
	c.HTTPAddr = "127.0.0.1:8080"
	c.DatabaseMaxConns = 40
	c.LogLevel = slog.LevelInfo
	c.LogFormat = "json"
	c.SessionIdle = 30 * time.Minute
	c.SessionAbsolute = 8 * time.Hour
	c.PaymentsProvider = "sandbox"
	c.ProjectionBatchSize = 1000
	c.ConsistencyWait = 2 * time.Second
	c.ShutdownTimeout = 15 * time.Second
	c.LoginFailuresBeforeThrottle = 5
	c.LoginThrottleWindow = 15 * time.Minute
}

func (c *Config) read(getenv func(string) string) error {
	str := func(name string, dst *string) {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			*dst = v
		}
	}
	str("TAKI_DATABASE_URL", &c.DatabaseURL)
	str("TAKI_HTTP_ADDR", &c.HTTPAddr)
	str("TAKI_LOG_FORMAT", &c.LogFormat)
	str("TAKI_PAYMENTS_PROVIDER", &c.PaymentsProvider)
	str("TAKI_SQUARE_BASE_URL", &c.SquareBaseURL)
	str("TAKI_SQUARE_ACCESS_TOKEN", &c.SquareAccessToken)
	str("TAKI_SQUARE_WEBHOOK_SIGNATURE_KEY", &c.SquareWebhookSignatureKey)
	str("TAKI_SQUARE_WEBHOOK_URL", &c.SquareWebhookURL)
	c.Secret = []byte(getenv("TAKI_SECRET"))

	if v := strings.TrimSpace(getenv("TAKI_ALLOWED_ORIGINS")); v != "" {
		for _, o := range strings.Split(v, ",") {
			if o = strings.TrimSpace(o); o != "" {
				c.AllowedOrigins = append(c.AllowedOrigins, strings.TrimRight(o, "/"))
			}
		}
	}
	if v := strings.TrimSpace(getenv("TAKI_COOKIE_SECURE")); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return &Error{"TAKI_COOKIE_SECURE", fmt.Sprintf("%q is not true or false", v)}
		}
		c.CookieSecure = b
	}
	if v := strings.TrimSpace(getenv("TAKI_LOG_LEVEL")); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			return &Error{"TAKI_LOG_LEVEL", fmt.Sprintf("%q is not debug, info, warn or error", v)}
		}
	}
	durations := []struct {
		name string
		dst  *time.Duration
	}{
		{"TAKI_SESSION_IDLE", &c.SessionIdle},
		{"TAKI_SESSION_ABSOLUTE", &c.SessionAbsolute},
		{"TAKI_CONSISTENCY_WAIT", &c.ConsistencyWait},
		{"TAKI_SHUTDOWN_TIMEOUT", &c.ShutdownTimeout},
	}
	for _, d := range durations {
		if v := strings.TrimSpace(getenv(d.name)); v != "" {
			parsed, err := time.ParseDuration(v)
			if err != nil || parsed <= 0 {
				return &Error{d.name, fmt.Sprintf("%q is not a positive duration such as 30m", v)}
			}
			*d.dst = parsed
		}
	}
	if v := strings.TrimSpace(getenv("TAKI_DATABASE_MAX_CONNS")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 4 || n > 1000 {
			return &Error{"TAKI_DATABASE_MAX_CONNS", fmt.Sprintf("%q is not a number from 4 to 1000", v)}
		}
		c.DatabaseMaxConns = n
	}
	if v := strings.TrimSpace(getenv("TAKI_PROJECTION_BATCH_SIZE")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return &Error{"TAKI_PROJECTION_BATCH_SIZE", fmt.Sprintf("%q is not a number from 1 to 10000", v)}
		}
		c.ProjectionBatchSize = n
	}
	return nil
}

func (c *Config) validate() error {
	u, err := url.Parse(c.DatabaseURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || strings.Trim(u.Path, "/") == "" {
		return &Error{"TAKI_DATABASE_URL", "must be a postgres:// URL naming a database"}
	}
	if _, port, err := splitHostPort(c.HTTPAddr); err != nil || port == "" {
		return &Error{"TAKI_HTTP_ADDR", fmt.Sprintf("%q is not host:port", c.HTTPAddr)}
	}
	if len(c.Secret) == 0 {
		return &Error{"TAKI_SECRET", "is missing: set at least 32 random bytes (e.g. `openssl rand -hex 32`)"}
	}
	if len(c.Secret) < MinSecretLen {
		return &Error{"TAKI_SECRET", fmt.Sprintf("is %d bytes long; it must be at least %d", len(c.Secret), MinSecretLen)}
	}
	for _, o := range c.AllowedOrigins {
		ou, err := url.Parse(o)
		if err != nil || (ou.Scheme != "http" && ou.Scheme != "https") || ou.Host == "" || ou.Path != "" ||
			ou.RawQuery != "" || ou.ForceQuery || ou.Fragment != "" || strings.Contains(o, "#") || ou.User != nil {
			return &Error{"TAKI_ALLOWED_ORIGINS", fmt.Sprintf("%q is not an origin such as https://app.example.com", o)}
		}
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return &Error{"TAKI_LOG_FORMAT", fmt.Sprintf("%q is not json or text", c.LogFormat)}
	}
	switch c.PaymentsProvider {
	case "sandbox":
	case "square":
		if c.SquareBaseURL == "" {
			return &Error{"TAKI_SQUARE_BASE_URL", "is required when TAKI_PAYMENTS_PROVIDER=square"}
		}
		if c.SquareAccessToken == "" {
			return &Error{"TAKI_SQUARE_ACCESS_TOKEN", "is required when TAKI_PAYMENTS_PROVIDER=square"}
		}
		// Webhooks are optional (pending payments are also settled by asking the provider), but half
		// of their settings is a mistake that would refuse every webhook.
		if c.SquareWebhookSignatureKey != "" && c.SquareWebhookURL == "" {
			return &Error{"TAKI_SQUARE_WEBHOOK_URL", "is required with TAKI_SQUARE_WEBHOOK_SIGNATURE_KEY (the signature covers the URL)"}
		}
		if c.SquareWebhookURL != "" && c.SquareWebhookSignatureKey == "" {
			return &Error{"TAKI_SQUARE_WEBHOOK_SIGNATURE_KEY", "is required with TAKI_SQUARE_WEBHOOK_URL (webhooks are verified with it)"}
		}
	default:
		return &Error{"TAKI_PAYMENTS_PROVIDER", fmt.Sprintf("%q is not sandbox or square", c.PaymentsProvider)}
	}
	if c.SquareBaseURL != "" {
		if su, err := url.Parse(c.SquareBaseURL); err != nil || (su.Scheme != "http" && su.Scheme != "https") || su.Host == "" {
			return &Error{"TAKI_SQUARE_BASE_URL", fmt.Sprintf("%q is not an http(s) URL", c.SquareBaseURL)}
		}
	}
	if c.SquareWebhookURL != "" {
		if wu, err := url.Parse(c.SquareWebhookURL); err != nil || (wu.Scheme != "http" && wu.Scheme != "https") || wu.Host == "" {
			return &Error{"TAKI_SQUARE_WEBHOOK_URL", fmt.Sprintf("%q is not an absolute http(s) URL", c.SquareWebhookURL)}
		}
	}
	if c.SessionIdle < time.Minute {
		return &Error{"TAKI_SESSION_IDLE", "must be at least 1m (sessions record their last use once a minute)"}
	}
	if c.SessionAbsolute < c.SessionIdle {
		return &Error{"TAKI_SESSION_ABSOLUTE", "must not be shorter than TAKI_SESSION_IDLE"}
	}
	return nil
}

func splitHostPort(addr string) (string, string, error) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", "", errors.New("missing port")
	}
	port := addr[i+1:]
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", "", errors.New("bad port")
	}
	return addr[:i], port, nil
}
