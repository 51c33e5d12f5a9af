package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"taki/commands"
	"taki/infra/bus"
	"taki/infra/postgres"
	"taki/queries"
)

func newUsersCmd(env *environment) *cobra.Command {
	cmd := &cobra.Command{Use: "users", Short: "Manage users"}
	cmd.AddCommand(&cobra.Command{
		Use:   "promote EMAIL",
		Short: "Make the user with EMAIL an admin; that user's sessions end",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			srv, err := env.server(ctx)
			if err != nil {
				return err
			}
			defer srv.Close()
			u, _, err := bus.Send[queries.User](ctx, srv.Bus, commands.PromoteUser{Email: args[0]})
			if err != nil {
				return err
			}
			// Running servers would otherwise see the change at their next poll.
			if err := postgres.AnnounceNow(ctx, srv.Pool); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s (%s) is now %s; their sessions have ended\n", u.Email, u.ID, u.Role)
			return nil
		},
	})
	return cmd
}
