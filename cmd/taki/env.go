package main

import (
	"context"
	"io"
	"log/slog"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"taki/infra/config"
	"taki/infra/logging"
	"taki/infra/postgres"
	"taki/infra/server"
)

// environment is what every subcommand shares: settings from TAKI_* variables, overridden by flags.
type environment struct {
	databaseURL string
	httpAddr    string
	logLevel    string
	logFormat   string
}

func (e *environment) bindFlags(root *cobra.Command) {
	f := root.PersistentFlags()
	f.StringVar(&e.databaseURL, "database-url", "", "PostgreSQL URL (TAKI_DATABASE_URL)")
	f.StringVar(&e.httpAddr, "http-addr", "", "address to serve on (TAKI_HTTP_ADDR)")
	f.StringVar(&e.logLevel, "log-level", "", "debug, info, warn or error (TAKI_LOG_LEVEL)")
	f.StringVar(&e.logFormat, "log-format", "", "json or text (TAKI_LOG_FORMAT)")
}

// config reads TAKI_* variables, with flags set on the command line taking precedence.
func (e *environment) config() (config.Config, error) {
	overrides := map[string]string{
		"TAKI_DATABASE_URL": e.databaseURL,
		"TAKI_HTTP_ADDR":    e.httpAddr,
		"TAKI_LOG_LEVEL":    e.logLevel,
		"TAKI_LOG_FORMAT":   e.logFormat,
	}
	return config.Load(func(name string) string {
		if v := overrides[name]; v != "" {
			return v
		}
		return os.Getenv(name)
	})
}

// logger writes structured logs to stderr: stdout is for command output (JSON lines, tables).
func (e *environment) logger(cfg config.Config, w io.Writer) *slog.Logger {
	if w == nil {
		w = os.Stderr
	}
	return logging.New(w, cfg.LogFormat, cfg.LogLevel)
}

// server wires a Taki instance on the configured (already migrated) database, for subcommands that
// dispatch through the bus. The caller closes it.
func (e *environment) server(ctx context.Context) (*server.Server, error) {
	cfg, err := e.config()
	if err != nil {
		return nil, err
	}
	return server.New(ctx, cfg, e.logger(cfg, nil), server.Options{})
}

// pool connects to the configured database.
func (e *environment) pool(ctx context.Context, cfg config.Config) (*pgxpool.Pool, error) {
	return postgres.Connect(ctx, cfg.DatabaseURL, 4)
}
