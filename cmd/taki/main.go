// Command taki is Taki's one binary: the server and its operator tools.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"taki/infra/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		var cfgErr *config.Error
		if errors.As(err, &cfgErr) {
			fmt.Fprintln(os.Stderr, "taki: configuration:", cfgErr)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "taki:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	env := &environment{}
	root := &cobra.Command{
		Use:           "taki",
		Short:         "Taki: an event-sourced messenger with payments",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	env.bindFlags(root)
	root.AddCommand(
		newServeCmd(env),
		newMigrateCmd(env),
		newUsersCmd(env),
		newProjectionsCmd(env),
		newSandboxCmd(env),
	)
	return root
}
