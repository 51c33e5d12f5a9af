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
		var usage *usageErr
		if errors.As(err, &usage) {
			fmt.Fprintln(os.Stderr, "taki: usage:", usage)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "taki:", err)
		os.Exit(1)
	}
}

// usageErr is a mistake on the command line: main prints it as one line and exits with status 2,
// as for a bad TAKI_* setting, before anything was done.
type usageErr struct {
	Arg, Reason string
}

func (e *usageErr) Error() string { return e.Arg + ": " + e.Reason }

func usageError(arg, reason string) error { return &usageErr{Arg: arg, Reason: reason} }

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
		newEventsCmd(env),
		newSeedCmd(env),
	)
	return root
}
