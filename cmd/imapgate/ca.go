package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

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
	var dir, listen, httpListen, passwordFile string
	cmd := &cobra.Command{
		Use:   "serve --dir DIR",
		Short: "serve the CA's HTTPS API, its CRL and roots",
		Long: `Serves the CA until SIGTERM or Ctrl-C. SIGHUP reloads ca.yaml: the listen addresses
(listen, http_listen; new listeners are opened first, the old ones drain), the CRL
schedule (crl.*) and log.level take effect at once; a change to any other key (name,
url, public_url, db, keys, certificates) is refused with a message naming it, and
nothing of that reload is applied. The flags below win over ca.yaml at every reload, and
--log-level over log.level.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			load := func() (*ca.Config, error) {
				cfg, err := ca.LoadConfig(dir)
				if err != nil {
					return nil, err
				}
				if listen != "" {
					cfg.Listen = listen
				}
				if httpListen != "" {
					cfg.HTTPListen = httpListen
				}
				if passwordFile != "" {
					// The operator's path is relative to where they are, not to the CA
					// directory (which is what a relative path in ca.yaml means).
					abs, err := filepath.Abs(passwordFile)
					if err != nil {
						return nil, fmt.Errorf("--password-file: %w", err)
					}
					cfg.Keys.PasswordFile = abs
				}
				return cfg, nil
			}
			cfg, err := load()
			if err != nil {
				return err
			}
			// --log-level, when given, wins over log.level, at start and at reload.
			levelFlag := cmd.Flag("log-level") != nil && cmd.Flag("log-level").Changed
			level := new(slog.LevelVar)
			lvl, _ := cfg.Log.SlogLevel()
			if levelFlag {
				if err := lvl.UnmarshalText([]byte(cmd.Flag("log-level").Value.String())); err != nil {
					return err
				}
			}
			level.Set(lvl)
			logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			slog.SetDefault(logger)
			c, err := ca.Open(cmd.Context(), cfg, ca.WithLogger(logger))
			if err != nil {
				return err
			}
			defer c.Close()
			ln, err := net.Listen("tcp", cfg.ListenAddr())
			if err != nil {
				return fmt.Errorf("ca: listen: %w", err)
			}
			var pub net.Listener
			if cfg.HTTPListen != "" {
				if pub, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
					ln.Close()
					return fmt.Errorf("ca: listen (plain HTTP): %w", err)
				}
				logger.Info("ca: public paths on plain HTTP", "addr", pub.Addr().String())
			}
			srv := ca.NewServer(c)
			srv.SetLevelVar(level)
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for {
					select {
					case <-cmd.Context().Done():
						return
					case <-hup:
					}
					next, err := load()
					if err != nil {
						logger.Error("ca: reload refused: the configuration does not load; the CA goes on as it was", "error", err)
						continue
					}
					changed, err := srv.Reload(next, levelFlag)
					if err != nil {
						logger.Error("ca: reload refused", "error", err)
						continue
					}
					logger.Info("ca: reloaded", "changed", strings.Join(changed, "; "))
				}
			}()
			logger.Info("ca: serving", "addr", ln.Addr().String(), "url", cfg.URL, "crl", cfg.CRLURL(), "db", cfg.DB.Type)
			return srv.Serve(cmd.Context(), ln, pub)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "the CA directory (required)")
	f.StringVar(&listen, "listen", "", "HTTPS listen address (default from ca.yaml)")
	f.StringVar(&httpListen, "http-listen", "", "plain-HTTP listen address for the public paths (default from ca.yaml)")
	f.StringVar(&passwordFile, "password-file", "", "file with the key password (default from ca.yaml, then $"+ca.PasswordEnv+")")
	cmd.MarkFlagRequired("dir")
	return cmd
}
