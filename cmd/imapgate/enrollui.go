package main

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	enrollui "github.com/imapgate/imapgate/enroll-ui"
)

// newEnrollUICmd is `imapgate enroll-ui --config FILE`: the help desk web UI
// (docs/enroll-ui.md). Flags override the file.
func newEnrollUICmd() *cobra.Command {
	var (
		cfgPath                                string
		check                                  bool
		listen, module, caURL, agent, admin    string
		tlsCert, tlsKey, auditLog, operatorArg string
	)
	cmd := &cobra.Command{
		Use:   "enroll-ui --config FILE",
		Short: "Run the help desk web UI: enroll smartcards, change PINs, find and revoke certificates",
		Long: `Run the help desk web UI on this PC (127.0.0.1 by default). It drives the card
reader through the PKCS#11 module and talks to the CA with this PC's enrollment-agent
credential; an admin credential, when configured, unlocks revocation.

At start it prints a link with a one-off access token (unless operators log in with
passwords from the config). Every setting is in the YAML file given with --config; the
flags override it. See docs/enroll-ui.md and docs/helpdesk.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := enrollui.LoadConfig(cfgPath)
			if err != nil {
				return err
			}
			for flag, dst := range map[string]*string{"listen": &cfg.Listen, "module": &cfg.Module, "ca": &cfg.CAURL,
				"agent-cred": &cfg.AgentCred, "admin-cred": &cfg.AdminCred, "tls-cert": &cfg.TLSCert, "tls-key": &cfg.TLSKey,
				"audit-log": &cfg.AuditLog, "operator": &cfg.Operator} {
				if cmd.Flags().Changed(flag) {
					v, _ := cmd.Flags().GetString(flag)
					*dst = v
				}
			}
			if check {
				if err := enrollui.Check(cfg, slog.Default()); err != nil {
					return err
				}
				cmd.Println("enroll-ui config OK:", cfgPath)
				return nil
			}
			srv, err := enrollui.New(cfg, enrollui.Options{Log: slog.Default()})
			if err != nil {
				return err
			}
			defer srv.Close()
			return srv.Run(cmd.Context(), cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "", "the UI's YAML configuration file (docs/enroll-ui.md); without it, flags only")
	f.BoolVar(&check, "check", false, "load and check the config, the module and the credentials, then exit")
	f.StringVar(&listen, "listen", enrollui.DefaultListen, "host:port to serve on (non-loopback needs --tls-cert)")
	f.StringVar(&module, "module", "", "PKCS#11 module of the card reader (opensc-pkcs11.so, libykcs11.so)")
	f.StringVar(&caURL, "ca", "", "the CA's HTTPS API, https://ca.example.org:8443")
	f.StringVar(&agent, "agent-cred", "", "enrollment-agent credential directory")
	f.StringVar(&admin, "admin-cred", "", "admin credential directory (unlocks revocation)")
	f.StringVar(&tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM)")
	f.StringVar(&tlsKey, "tls-key", "", "the key of --tls-cert (PEM, 0600)")
	f.StringVar(&auditLog, "audit-log", "", "append audit lines to this file (default: the process log)")
	f.StringVar(&operatorArg, "operator", "", "the operator's name in audit lines when the access token is used")
	cmd.AddCommand(newEnrollUIHashCmd())
	return cmd
}

// newEnrollUIHashCmd prints a bcrypt hash for operators[].password_hash; the
// password is read from stdin, never from the command line.
func newEnrollUIHashCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "hash-password",
		Short: "read an operator password from stdin and print its hash for the config",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(os.Stderr, "operator password (at least 10 characters), then Enter:")
			line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
			if err != nil && line == "" {
				return fmt.Errorf("enroll-ui hash-password: read the password from stdin: %w", err)
			}
			h, err := enrollui.HashPassword(strings.TrimRight(line, "\r\n"))
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), h)
			return nil
		},
	}
}
