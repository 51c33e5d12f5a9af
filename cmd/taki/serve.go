package main

import (
	"fmt"
	"net"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"

	"taki/infra/postgres"
	"taki/infra/server"
)

// tuneGC trades memory for CPU unless the operator chose (GOGC): a serving process allocates per
// request and per event, and on a small machine the collector's share of the CPU is capacity lost to
// PostgreSQL and clients; memory is the cheaper resource here.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
}

func newServeCmd(env *environment) *cobra.Command {
	migrate := true
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Create the database if missing, migrate it and serve HTTP until SIGINT/SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, err := env.config()
			if err != nil {
				return err
			}
			logger := env.logger(cfg, nil)
			tuneGC()
			if migrate {
				if err := postgres.EnsureDatabase(ctx, cfg.DatabaseURL); err != nil {
					return err
				}
				pool, err := env.pool(ctx, cfg)
				if err != nil {
					return err
				}
				err = postgres.Migrate(ctx, pool)
				pool.Close()
				if err != nil {
					return err
				}
			}
			srv, err := server.New(ctx, cfg, logger, server.Options{})
			if err != nil {
				return err
			}
			defer srv.Close()
			ln, err := net.Listen("tcp", cfg.HTTPAddr)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
			}
			return srv.Serve(ctx, ln)
		},
	}
	cmd.Flags().BoolVar(&migrate, "migrate", true, "create the database if missing and apply pending migrations first")
	return cmd
}
