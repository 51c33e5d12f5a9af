package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"taki/infra/postgres"
)

func newMigrateCmd(env *environment) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply, roll back or list the embedded schema migrations",
	}
	run := func(use, short string, fn func(cmd *cobra.Command, m *postgres.Migrator) error) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				ctx := cmd.Context()
				cfg, err := env.config()
				if err != nil {
					return err
				}
				if use == "up" {
					if err := postgres.EnsureDatabase(ctx, cfg.DatabaseURL); err != nil {
						return err
					}
				}
				pool, err := env.pool(ctx, cfg)
				if err != nil {
					return err
				}
				defer pool.Close()
				m, err := postgres.NewMigrator(pool)
				if err != nil {
					return err
				}
				defer m.Close()
				return fn(cmd, m)
			},
		}
	}
	cmd.AddCommand(
		run("up", "Apply every pending migration (creating the database if missing)", func(cmd *cobra.Command, m *postgres.Migrator) error {
			res, err := m.Up(cmd.Context())
			for _, r := range res {
				fmt.Fprintf(cmd.OutOrStdout(), "applied %s (%s)\n", r.Source.Path, r.Duration)
			}
			if err == nil && len(res) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no pending migrations")
			}
			return err
		}),
		run("down", "Roll back the latest migration", func(cmd *cobra.Command, m *postgres.Migrator) error {
			r, err := m.Down(cmd.Context())
			if r != nil && r.Source != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "rolled back %s\n", r.Source.Path)
			}
			return err
		}),
		run("status", "List migrations and whether each is applied", func(cmd *cobra.Command, m *postgres.Migrator) error {
			st, err := m.Status(cmd.Context())
			if err != nil {
				return err
			}
			for _, s := range st {
				applied := "pending"
				if !s.AppliedAt.IsZero() {
					applied = "applied " + s.AppliedAt.UTC().Format("2006-01-02T15:04:05Z")
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%-40s %s\n", s.Source.Path, applied)
			}
			return nil
		}),
	)
	return cmd
}
