package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/imapgate/imapgate/caclient"
	"github.com/spf13/cobra"
)

func newAuditCmd() *cobra.Command {
	var api apiFlags
	var q caclient.AuditQuery
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "audit [--serial HEX] [--user EMAIL] [--limit N] [--json]",
		Short: "list the CA's audit trail: who issued, revoked or was refused what, and why",
		Long: `Lists the CA's audit trail, newest first: every issuance and revocation (with
its result), every refused request (who asked, for what, why it was refused), and
the help desk's own actions (PIN changes, unblocks, wipes). An admin credential
sees everything; an enrollment agent only what concerns user certificates.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := api.client()
			if err != nil {
				return err
			}
			entries, err := cl.Audit(cmd.Context(), q)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(entries)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tACTOR\tACTION\tRESULT\tSERIAL\tUSER\tREASON")
			for _, e := range entries {
				actor := e.Actor
				if e.Role != "" {
					actor += " (" + e.Role + ")"
				}
				action := e.Action
				if e.Reported {
					action += " [reported]"
				}
				user := e.User
				if e.TokenSerial != "" {
					user += " token " + e.TokenSerial
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339), actor, action, e.Result, dash(e.Serial), dash(user), e.Reason)
			}
			return tw.Flush()
		},
	}
	api.register(cmd)
	cmd.Flags().StringVar(&q.Serial, "serial", "", "only entries about this certificate (hex serial)")
	cmd.Flags().StringVar(&q.User, "user", "", "only entries about this user (or role holder, or server names)")
	cmd.Flags().IntVar(&q.Limit, "limit", 0, "at most this many entries, newest first (default 100, at most 1000)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
