package main

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"
)

// newRootCmd wires every subcommand. Each lives in its own file (ca.go, cert.go,
// token.go, front.go, …) and only parses flags and calls into its package.
func newRootCmd() *cobra.Command {
	var logLevel string
	root := &cobra.Command{
		Use:           "imapgate",
		Short:         "A second factor for IMAP: smartcard client certificates in front of your mail server",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return err
			}
			slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})))
			return nil
		},
	}
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.AddCommand(
		newCACmd(),
		newCertCmd(),
		newAgentCmd(),
		newAuditCmd(),
		newTokenCmd(),
		newFrontCmd(),
		newEnrollUICmd(),
	)
	return root
}
