package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// usageError is a mistake in the command line (an unknown subcommand or flag, a
// missing argument): main prints it on one line and exits 2, as command-line
// tools do, so a script can tell it from a failure of the work itself (exit 1).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// isUsageError also recognises cobra's own messages that reach Execute without
// passing a hook (a required flag not given, an unknown command of the root).
func isUsageError(err error) bool {
	var u usageError
	if errors.As(err, &u) {
		return true
	}
	msg := err.Error()
	for _, p := range []string{"required flag(s)", "unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// oneLine keeps the first line of an error (cobra appends "Did you mean this?"
// suggestions on further lines) and says where the help is.
func oneLine(err error) string {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return strings.TrimSpace(msg) + " (see --help)"
}

// strictUsage makes every command of the tree refuse what it does not know:
// flag and argument errors become usageErrors, and a command that only groups
// subcommands (ca, cert, token, …) refuses an unknown one instead of printing
// its help and exiting 0; given no subcommand at all it still prints its help.
func strictUsage(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.HasSubCommands() && !c.Runnable() {
			c.Args = cobra.ArbitraryArgs
			c.RunE = func(cmd *cobra.Command, args []string) error {
				if len(args) > 0 {
					return usageError{fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())}
				}
				return cmd.Help()
			}
		}
		if v := c.Args; v != nil {
			c.Args = func(cmd *cobra.Command, args []string) error {
				if err := v(cmd, args); err != nil {
					return usageError{err}
				}
				return nil
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
