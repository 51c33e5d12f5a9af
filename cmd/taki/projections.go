package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newProjectionsCmd(env *environment) *cobra.Command {
	cmd := &cobra.Command{Use: "projections", Short: "Inspect and rebuild read models"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List projections with their checkpoint, lag in events and status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			srv, err := env.server(ctx)
			if err != nil {
				return err
			}
			defer srv.Close()
			statuses, err := srv.Projector.Statuses(ctx)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tCHECKPOINT\tLAG\tSTATUS")
			for _, s := range statuses {
				// This process runs no subscriber: describe the projection by its lag alone.
				status := "caught up"
				if s.LagEvents > 0 {
					status = "behind"
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", s.Name, s.Checkpoint, s.LagEvents, status)
			}
			return w.Flush()
		},
	})
	return cmd
}
