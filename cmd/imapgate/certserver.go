package main

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/imapgate/imapgate/caclient"
	"github.com/spf13/cobra"
	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/pemutil"
)

// Files `imapgate cert server` writes into --out.
const (
	serverCertFile = "server.crt" // leaf, then intermediate: the front's tls.cert_file
	serverKeyFile  = "server.key" // 0600: the front's tls.key_file
)

func newCertServerCmd() *cobra.Command {
	var api apiFlags
	var dns, ips []string
	var out, validity string
	cmd := &cobra.Command{
		Use:   "server --dns NAME [--dns NAME…] [--ip ADDR…] --out DIR [--validity 2160h]",
		Short: "make a key here and have the CA issue a TLS server certificate for it (a front's)",
		Long: `Generates an EC P-256 key on this machine (it never leaves it), sends the CA a
certificate request for exactly the names given, and writes DIR/` + serverCertFile + ` (the
certificate, then the intermediate) and DIR/` + serverKeyFile + ` (0600): the front's tls.cert_file and
tls.key_file. The certificate has EKU serverAuth, KeyUsage digitalSignature and CA:FALSE,
as Thunderbird (NSS) demands, and lives the CA's certificates.server_validity (90 days)
unless --validity says otherwise. Needs an admin credential (--cred). Run it again to
renew: the pair is replaced atomically (the key first), then reload the front (SIGHUP).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ipList []net.IP
			for _, s := range ips {
				ip := net.ParseIP(s)
				if ip == nil {
					return fmt.Errorf("--ip %q is not an IP address", s)
				}
				ipList = append(ipList, ip)
			}
			if len(dns)+len(ipList) == 0 {
				return fmt.Errorf("give the server's names: --dns mail.example.org (and/or --ip 192.0.2.10)")
			}
			life, err := parseValidity(validity)
			if err != nil {
				return err
			}
			cl, err := api.client()
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			key, err := keyutil.GenerateDefaultSigner()
			if err != nil {
				return err
			}
			cn := append(append([]string{}, dns...), ips...)[0]
			der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
				Subject: pkix.Name{CommonName: cn}, DNSNames: dns, IPAddresses: ipList}, key)
			if err != nil {
				return fmt.Errorf("certificate request: %w", err)
			}
			resp, err := cl.SignServer(cmd.Context(), caclient.ServerRequest{
				CSR: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
				DNS: dns, IP: ipList, Validity: life,
			})
			if err != nil {
				return err
			}
			blk, err := pemutil.Serialize(key)
			if err != nil {
				return err
			}
			keyPath, certPath := filepath.Join(out, serverKeyFile), filepath.Join(out, serverCertFile)
			if err := replaceFile(keyPath, pem.EncodeToMemory(blk), 0o600); err != nil {
				return err
			}
			if err := replaceFile(certPath, resp.ChainPEM, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "server certificate %s for %s, valid until %s\n  tls.cert_file: %s\n  tls.key_file:  %s\n",
				resp.Serial, strings.Join(append(append([]string{}, dns...), ips...), ", "), resp.NotAfter.UTC().Format(time.RFC3339), certPath, keyPath)
			return nil
		},
	}
	api.register(cmd)
	cmd.Flags().StringArrayVar(&dns, "dns", nil, "DNS name the server is reached by (repeat for several)")
	cmd.Flags().StringArrayVar(&ips, "ip", nil, "IP address the server is reached by (repeat for several)")
	cmd.Flags().StringVar(&out, "out", "", "directory for "+serverCertFile+" and "+serverKeyFile+" (required)")
	cmd.Flags().StringVar(&validity, "validity", "", "lifetime, e.g. 2160h or 90d (default: the CA's certificates.server_validity, 90 days)")
	cmd.MarkFlagRequired("out")
	return cmd
}

// parseValidity reads a Go duration or a number of days ("90d"); "" is 0.
func parseValidity(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("--validity %q: give days as 90d or a duration as 2160h", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("--validity %q: give days as 90d or a duration as 2160h", s)
	}
	return v, nil
}

// replaceFile writes b beside path with mode (a fresh file, so the mode is
// never an older file's), syncs it and renames it over path.
func replaceFile(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".new"
	if err := os.Remove(tmp); err != nil && !os.IsNotExist(err) {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
