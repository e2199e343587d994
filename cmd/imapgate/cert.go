package main

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imapgate/imapgate/caclient"
	"github.com/spf13/cobra"
	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/x509util"
)

// apiFlags are the --ca and --cred flags every API command shares.
type apiFlags struct{ url, cred string }

func (a *apiFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&a.url, "ca", "", "CA URL, https://HOST:PORT (default $"+caclient.EnvCA+")")
	cmd.Flags().StringVar(&a.cred, "cred", "", "credential directory with cert.pem, key.pem, roots.pem (default $"+caclient.EnvCred+")")
}

func (a *apiFlags) credDir() string {
	if a.cred != "" {
		return a.cred
	}
	return os.Getenv(caclient.EnvCred)
}

func (a *apiFlags) client() (*caclient.Client, error) {
	u, cred := a.url, a.credDir()
	if u == "" {
		u = os.Getenv(caclient.EnvCA)
	}
	if u == "" || cred == "" {
		return nil, fmt.Errorf("give the CA and a credential: --ca URL --cred DIR (or set %s and %s)", caclient.EnvCA, caclient.EnvCred)
	}
	return caclient.New(u, cred)
}

func newCertCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cert", Short: "sign, revoke and list certificates through the CA API"}
	cmd.AddCommand(newCertSignCmd(), newCertServerCmd(), newCertRevokeCmd(), newCertListCmd())
	return cmd
}

func newCertSignCmd() *cobra.Command {
	var api apiFlags
	var csrFile, user, out string
	var days int
	cmd := &cobra.Command{
		Use:   "sign --csr FILE --user EMAIL [--out FILE]",
		Short: "have the CA sign a CSR for a mailbox identity",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := api.client()
			if err != nil {
				return err
			}
			csr, err := os.ReadFile(csrFile)
			if err != nil {
				return fmt.Errorf("read CSR: %w", err)
			}
			resp, err := cl.Sign(cmd.Context(), caclient.SignRequest{CSR: csr, User: user, ValidityDays: days})
			if err != nil {
				return err
			}
			if out == "" || out == "-" {
				_, err = cmd.OutOrStdout().Write(resp.ChainPEM)
				return err
			}
			if err := os.WriteFile(out, resp.ChainPEM, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "issued %s for %s, valid until %s, written to %s\n", resp.Serial, resp.User, resp.NotAfter.Format(time.RFC3339), out)
			return nil
		},
	}
	api.register(cmd)
	cmd.Flags().StringVar(&csrFile, "csr", "", "PEM CSR file (required)")
	cmd.Flags().StringVar(&user, "user", "", "mailbox login the certificate is bound to (required)")
	cmd.Flags().StringVar(&out, "out", "", "write the chain here (default stdout)")
	cmd.Flags().IntVar(&days, "days", 0, "validity in days (default: the CA's, 365)")
	cmd.MarkFlagRequired("csr")
	cmd.MarkFlagRequired("user")
	return cmd
}

func newCertRevokeCmd() *cobra.Command {
	var api apiFlags
	var reason, comment, certFile string
	var force bool
	cmd := &cobra.Command{
		Use:   "revoke SERIAL | --cert FILE [--reason REASON]",
		Short: "revoke a certificate by its hex serial (as openssl prints it) or its certificate file",
		Long: `Revokes a certificate; the CA re-signs its CRL at once and fronts pick it up within
seconds. If the CA cannot re-sign right now (another CA node holds the CRL lock, say),
the revocation is still stored and the output says "NOT on the CRL yet" and when it
will be; every CA node retries every crl.check_interval. REASON is an RFC 5280 name: unspecified, keyCompromise, affiliationChanged,
superseded, cessationOfOperation, privilegeWithdrawn.

After the CA's database was restored from a backup, it does not know the certificates
issued since; they still pass the fronts. --cert FILE (a PEM certificate, or a chain
whose first certificate is the one to revoke) revokes such a certificate: the CA checks
that its intermediate signed it, records it and revokes it. Without the file,
--force-unknown-serial SERIAL puts a serial the CA does not know on the CRL. Both are
for admins and audited.`,
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case certFile != "" && force:
				return fmt.Errorf("--cert and --force-unknown-serial exclude each other: with --cert the CA checks it signed the certificate")
			case certFile != "" && len(args) > 0:
				return fmt.Errorf("give SERIAL or --cert FILE, not both")
			case certFile == "" && len(args) != 1:
				return fmt.Errorf("give the hex SERIAL of the certificate to revoke, or --cert FILE")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req := caclient.RevokeRequest{Reason: reason, Comment: comment, ForceUnknownSerial: force}
			if len(args) == 1 {
				req.Serial = args[0]
			}
			if certFile != "" {
				b, err := os.ReadFile(certFile)
				if err != nil {
					return fmt.Errorf("read the certificate: %w", err)
				}
				req.CertificatePEM = b
			}
			cl, err := api.client()
			if err != nil {
				return err
			}
			rv, err := cl.RevokeWith(cmd.Context(), req)
			if err != nil {
				return err
			}
			if rv.CRLPending {
				fmt.Fprintf(cmd.OutOrStdout(), "revoked %s at %s; NOT on the CRL yet: %s\n", rv.Serial, rv.RevokedAt.Format(time.RFC3339), rv.Note)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s at %s; CRL number %d\n", rv.Serial, rv.RevokedAt.Format(time.RFC3339), rv.CRLNumber)
			return nil
		},
	}
	api.register(cmd)
	cmd.Flags().StringVar(&reason, "reason", "unspecified", "RFC 5280 reason")
	cmd.Flags().StringVar(&comment, "comment", "", "free text for the audit trail (no secrets)")
	cmd.Flags().StringVar(&certFile, "cert", "", "revoke the certificate in this PEM file, recording it first if the CA database does not hold it")
	cmd.Flags().BoolVar(&force, "force-unknown-serial", false, "revoke SERIAL even if the CA database does not hold it (its certificate file is gone)")
	return cmd
}

func newCertListCmd() *cobra.Command {
	var api apiFlags
	var q caclient.CertQuery
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--user EMAIL] [--serial HEX] [--limit N [--before CURSOR]]",
		Short: "list issued certificates and their status",
		Long: `Lists issued certificates, newest first: all of them, or with --limit one page of at
most N (1 to 1000). A page that is not the last ends with the command for the next one
(on standard error; with --json, as "next" beside "certs").`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if q.Limit < 0 || q.Limit > 1000 || q.Before != "" && q.Limit == 0 {
				return fmt.Errorf("--limit %d: give a page size from 1 to 1000 (--before needs it too)", q.Limit)
			}
			cl, err := api.client()
			if err != nil {
				return err
			}
			var page caclient.CertPage
			if q.Limit > 0 {
				page, err = cl.SearchPage(cmd.Context(), q)
			} else {
				page.Certs, err = cl.Search(cmd.Context(), q)
			}
			if err != nil {
				return err
			}
			certs := page.Certs
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if q.Limit > 0 {
					return enc.Encode(page)
				}
				return enc.Encode(certs)
			}
			if page.Next != "" {
				defer fmt.Fprintf(cmd.ErrOrStderr(), "more: imapgate cert list%s --limit %d --before %s\n", listFilter(q), q.Limit, page.Next)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SERIAL\tUSER/ROLE\tSTATUS\tNOT AFTER\tISSUED BY")
			for _, c := range certs {
				who := c.User
				switch {
				case c.Role != "":
					who = "role:" + c.Role + " " + c.Subject
				case c.Kind == "server" || c.Kind == "ca-tls":
					who = c.Kind + ":" + strings.Join(append(append([]string{}, c.DNS...), c.IP...), ",")
				case c.Kind == "unknown":
					// Revoked by its bare serial: the CA knows nothing else of it.
					who = "unknown:" + c.Subject
				}
				st := c.Status
				if c.Status == "revoked" {
					st += " (" + c.Reason + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Serial, who, st, c.NotAfter.Format("2006-01-02"), c.IssuedBy.Subject)
			}
			return tw.Flush()
		},
	}
	api.register(cmd)
	cmd.Flags().StringVar(&q.User, "user", "", "only this mailbox identity")
	cmd.Flags().StringVar(&q.Serial, "serial", "", "only the certificate with this hex serial")
	cmd.Flags().IntVar(&q.Limit, "limit", 0, "one page of at most this many certificates (1–1000; default: all)")
	cmd.Flags().StringVar(&q.Before, "before", "", "the page after the one that printed this cursor")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// listFilter is q's filter as cert list's flags.
func listFilter(q caclient.CertQuery) string {
	s := ""
	if q.User != "" {
		s += " --user " + q.User
	}
	if q.Serial != "" {
		s += " --serial " + q.Serial
	}
	return s
}

func newAgentCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "agent", Short: "manage enrollment-agent and admin credentials"}
	var api apiFlags
	var role, name, out string
	issue := &cobra.Command{
		Use:   "issue --role enroll|admin --name NAME --out DIR",
		Short: "make a key here and have the CA certify it for a role",
		Long: `Generates a key pair on this machine (it never leaves it), has the CA issue a role
certificate for it, and writes cert.pem, key.pem (0600) and roots.pem into DIR — a
credential for 'imapgate token enroll' (role enroll) or for another admin (role admin).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if role != "enroll" && role != "admin" {
				return fmt.Errorf("--role %q: use enroll or admin", role)
			}
			if ents, _ := os.ReadDir(out); len(ents) > 0 {
				return fmt.Errorf("%s is not empty; refusing to overwrite a credential", out)
			}
			cl, err := api.client()
			if err != nil {
				return err
			}
			key, err := keyutil.GenerateDefaultSigner()
			if err != nil {
				return err
			}
			csr, err := x509util.CreateCertificateRequest(name, nil, key)
			if err != nil {
				return err
			}
			csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw})
			resp, err := cl.IssueAgent(cmd.Context(), role, name, csrPEM)
			if err != nil {
				return err
			}
			roots, err := caclient.RootsPEM(api.credDir())
			if err != nil {
				return err
			}
			if err := caclient.WriteCredential(out, resp.ChainPEM, key, roots); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s credential %q (serial %s, valid until %s) written to %s\n",
				role, name, resp.Serial, resp.NotAfter.Format("2006-01-02"), out)
			return nil
		},
	}
	api.register(issue)
	issue.Flags().StringVar(&role, "role", "enroll", "enroll (help desk PC) or admin")
	issue.Flags().StringVar(&name, "name", "", "name of the holder, e.g. the help desk PC (required)")
	issue.Flags().StringVar(&out, "out", "", "directory for the new credential (required)")
	issue.MarkFlagRequired("name")
	issue.MarkFlagRequired("out")
	cmd.AddCommand(issue)
	return cmd
}
