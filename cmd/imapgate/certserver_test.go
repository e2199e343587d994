package main

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/caclient"
	"github.com/imapgate/imapgate/testenv"
)

// TestCertServerCommand: `imapgate cert server` against a real CA writes a
// key (0600) and a chain a TLS server loads as they are; a second run
// replaces the pair; an enrollment agent's credential is refused.
func TestCertServerCommand(t *testing.T) {
	c := testenv.StartCA(t)
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "front-tls")
	args := []string{"cert", "server", "--ca", c.URL, "--cred", c.AdminCred, "--dns", "mail.example.org", "--ip", "127.0.0.1", "--out", out}
	msg, err := runCLI(ctx, args...)
	if err != nil || !strings.Contains(msg, "tls.cert_file") {
		t.Fatalf("cert server: %v\n%s", err, msg)
	}
	certFile, keyFile := filepath.Join(out, serverCertFile), filepath.Join(out, serverKeyFile)
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v, want 0600", err, st.Mode().Perm())
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("the pair does not load as a TLS certificate: %v", err)
	}
	b, _ := os.ReadFile(certFile)
	chain, err := caclient.ParseCerts(b)
	if err != nil || len(chain) != 2 || chain[1].Subject.String() != c.Intermediate.Subject.String() {
		t.Fatalf("cert file: %v, %d certificates, want leaf and intermediate", err, len(chain))
	}
	if chain[0].IsCA || len(chain[0].DNSNames) != 1 || len(chain[0].IPAddresses) != 1 {
		t.Errorf("leaf: CA %v DNS %v IP %v", chain[0].IsCA, chain[0].DNSNames, chain[0].IPAddresses)
	}
	if msg, err := runCLI(ctx, args...); err != nil {
		t.Fatalf("renewal: %v\n%s", err, msg)
	}
	again, _ := tls.LoadX509KeyPair(certFile, keyFile)
	if again.Leaf.SerialNumber.Cmp(pair.Leaf.SerialNumber) == 0 {
		t.Error("a second run did not replace the certificate")
	}
	if msg, err := runCLI(ctx, "cert", "server", "--ca", c.URL, "--cred", c.EnrollCred, "--dns", "mail.example.org", "--out", t.TempDir()); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("an enrollment agent got a server certificate: %v\n%s", err, msg)
	}
	if _, err := runCLI(ctx, "cert", "server", "--ca", c.URL, "--cred", c.AdminCred, "--out", t.TempDir()); err == nil || !strings.Contains(err.Error(), "--dns") {
		t.Errorf("no names: %v", err)
	}
}
