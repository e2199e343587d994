package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"

	"github.com/imapgate/imapgate/ca"
	"github.com/spf13/cobra"
)

func newCACmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "run imapgate's certificate authority"}
	cmd.AddCommand(newCAInitCmd(), newCAServeCmd())
	return cmd
}

func newCAInitCmd() *cobra.Command {
	var o ca.InitOptions
	var keyType, dbType, dbDSN string
	cmd := &cobra.Command{
		Use:   "init --dir DIR --name NAME --url https://HOST:PORT",
		Short: "create a new CA: root, intermediate, TLS certificate, config and a first admin credential",
		Long: `Creates a root (10 years) and an intermediate (5 years) CA, EC P-256 by default. Their keys
are written encrypted (0600) with the password from --password-file or IMAPGATE_CA_PASSWORD;
with --kms the intermediate key is generated inside a PKCS#11 HSM instead. A first admin
credential (certificate and key) is written to DIR/admin. An existing CA is never overwritten.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch keyType {
			case "ec-p256":
				o.KeyType = "EC"
			case "rsa-3072":
				o.KeyType = "RSA"
			default:
				return fmt.Errorf("--key-type %q: use ec-p256 or rsa-3072", keyType)
			}
			if dbType != "" {
				o.DB = &ca.DBConfig{Type: dbType, DataSource: dbDSN}
			}
			cfg, err := ca.Init(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "CA %q created in %s\n  API:   %s\n  CRL:   %s\n  admin credential: %s/admin (keep it safe)\nStart it with: imapgate ca serve --dir %s\n",
				cfg.Name, o.Dir, cfg.URL, cfg.CRLURL(), o.Dir, o.Dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Dir, "dir", "", "directory for the new CA (required)")
	f.StringVar(&o.Name, "name", "", "organisation name, e.g. \"Example Org\" (required)")
	f.StringVar(&o.URL, "url", "", "https URL clients use to reach the CA API (required)")
	f.StringVar(&o.PublicURL, "public-url", "", "base URL for the CRL and AIA in certificates (default --url)")
	f.StringVar(&o.HTTPListen, "http-listen", "", "optional plain-HTTP listener for /crl and /roots.pem")
	f.StringVar(&o.PasswordFile, "password-file", "", "file with the key password (default: $"+ca.PasswordEnv+")")
	f.StringVar(&o.KMS, "kms", "", "PKCS#11 KMS URI to keep the intermediate key in an HSM (pkcs11:module-path=…;token=…?pin-source=…)")
	f.StringVar(&keyType, "key-type", "ec-p256", "CA key type: ec-p256 or rsa-3072")
	f.StringVar(&dbType, "db-type", "", "database: bbolt (default, DIR/ca.db) or postgresql")
	f.StringVar(&dbDSN, "db", "", "database data source: bbolt file or PostgreSQL DSN")
	for _, n := range []string{"dir", "name", "url"} {
		cmd.MarkFlagRequired(n)
	}
	return cmd
}

func newCAServeCmd() *cobra.Command {
	var o caServeOptions
	cmd := &cobra.Command{
		Use:   "serve --dir DIR",
		Short: "serve the CA's HTTPS API, its CRL and roots",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.open(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			serve, err := listenCA(c)
			if err != nil {
				return err
			}
			return serve(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dir, "dir", "", "the CA directory (required)")
	f.StringVar(&o.listen, "listen", "", "HTTPS listen address (default from ca.yaml, then 127.0.0.1 and the port of its url)")
	f.StringVar(&o.httpListen, "http-listen", "", "plain-HTTP listen address for the public paths (default from ca.yaml)")
	f.StringVar(&o.passwordFile, "password-file", "", "file with the key password (default from ca.yaml, then $"+ca.PasswordEnv+")")
	cmd.MarkFlagRequired("dir")
	return cmd
}

// caServeOptions are what `ca serve` and `serve` take for the CA.
type caServeOptions struct{ dir, listen, httpListen, passwordFile string }

// open loads DIR/ca.yaml, applies the flags over it and opens the authority.
func (o caServeOptions) open(ctx context.Context) (*ca.CA, error) {
	cfg, err := ca.LoadConfig(o.dir)
	if err != nil {
		return nil, err
	}
	if o.listen != "" {
		cfg.Listen = o.listen
	}
	if o.httpListen != "" {
		cfg.HTTPListen = o.httpListen
	}
	if o.passwordFile != "" {
		// The operator's path is relative to where they are, not to the CA
		// directory (which is what a relative path in ca.yaml means).
		abs, err := filepath.Abs(o.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("--password-file: %w", err)
		}
		cfg.Keys.PasswordFile = abs
	}
	return ca.Open(ctx, cfg)
}

// listenCA binds the CA's HTTPS listener and its optional plain-HTTP one, and
// returns the function that serves them until ctx ends. Binding first lets a
// caller start what depends on the CA (a front fetching the CRL) before serve.
func listenCA(c *ca.CA) (serve func(context.Context) error, err error) {
	cfg := c.Config()
	ln, err := net.Listen("tcp", cfg.ListenAddr())
	if err != nil {
		return nil, fmt.Errorf("ca: listen: %w", err)
	}
	var pub net.Listener
	if cfg.HTTPListen != "" {
		if pub, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
			ln.Close()
			return nil, fmt.Errorf("ca: listen (plain HTTP): %w", err)
		}
		slog.Info("ca: public paths on plain HTTP", "addr", pub.Addr().String())
	}
	slog.Info("ca: serving", "addr", ln.Addr().String(), "url", cfg.URL, "crl", cfg.CRLURL(), "db", cfg.DB.Type)
	return func(ctx context.Context) error { return ca.NewServer(c).Serve(ctx, ln, pub) }, nil
}
