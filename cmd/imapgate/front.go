package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/imapgate/imapgate/mtls"
)

// newFrontCmd is `imapgate front --config FILE`: the mTLS IMAPS front (docs/front.md).
// SIGHUP reloads the file; SIGTERM (via the root context) drains and exits.
func newFrontCmd() *cobra.Command {
	var cfgPath string
	var check bool
	cmd := &cobra.Command{
		Use:   "front",
		Short: "Run the mTLS IMAPS front: smartcard certificate + password, then the mail server",
		Long: `Run the mTLS IMAPS front. It accepts a connection only with a valid, unrevoked
client certificate from your CA, then the mailbox password for the e-mail address in
that certificate, and only then connects the user to the real IMAP server.

Every setting is in the YAML file given with --config; see docs/front.md.
SIGHUP re-reads it; SIGTERM stops accepting and drains live sessions.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if check {
				if err := mtls.Check(cmd.Context(), cfgPath, cmd.OutOrStdout(), slog.Default()); err != nil {
					return err
				}
				cmd.Println("front config OK:", cfgPath)
				return nil
			}
			return runFront(cmd.Context(), cfgPath, nil)
		},
	}
	cmd.Flags().BoolVar(&check, "check", false, "load and check the config and every file it names, then exit")
	cmd.Flags().StringVar(&cfgPath, "config", "/etc/imapgate/front.yaml", "the front's YAML configuration file (docs/front.md)")
	return cmd
}

// runFront runs the front of cfgPath until ctx ends: SIGHUP, or a value on
// also (nil for none: `imapgate serve` sends one when it renews the front's
// certificate), re-reads the file; the end of ctx (SIGTERM) drains.
func runFront(ctx context.Context, cfgPath string, also <-chan struct{}) error {
	reload := make(chan struct{}, 1)
	poke := func() {
		select {
		case reload <- struct{}{}:
		default:
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-hup:
				poke()
			case <-also:
				poke()
			case <-done:
				return
			}
		}
	}()
	return mtls.Run(ctx, cfgPath, reload, slog.Default())
}
