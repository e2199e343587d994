package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/ca"
	"github.com/imapgate/imapgate/caclient"
	"github.com/imapgate/imapgate/testenv"
)

// TestCertRevokeUnknown: after the CA's database is restored from a copy
// taken before two front certificates were issued, `cert revoke SERIAL`
// says how to revoke them, `cert revoke --cert FILE` and `cert revoke
// --force-unknown-serial SERIAL` do, and `cert list` shows them revoked.
func TestCertRevokeUnknown(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	dbFile := filepath.Join(dir, "ca.db")
	ctx := context.Background()
	c := testenv.StartCA(t, testenv.CAOptions{Dir: dir})
	c.Stop()
	backup, err := os.ReadFile(dbFile)
	if err != nil {
		t.Fatal(err)
	}
	c = testenv.StartCA(t, testenv.CAOptions{Dir: dir})
	api := []string{"--ca", c.URL, "--cred", c.AdminCred}
	serial := map[string]string{}
	for _, name := range []string{"kept", "lost"} {
		out := filepath.Join(t.TempDir(), name)
		if msg, err := runCLI(ctx, append([]string{"cert", "server", "--dns", name + ".example.org", "--out", out}, api...)...); err != nil {
			t.Fatalf("cert server: %v\n%s", err, msg)
		}
		b, _ := os.ReadFile(filepath.Join(out, serverCertFile))
		chain, err := caclient.ParseCerts(b)
		if err != nil {
			t.Fatal(err)
		}
		serial[name] = ca.SerialHex(chain[0].SerialNumber)
		serial[name+"-file"] = filepath.Join(out, serverCertFile)
	}
	c.Stop()
	if err := os.WriteFile(dbFile, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.StartCA(t, testenv.CAOptions{Dir: dir}) // the restarted CA, on the restored database

	revoke := func(args ...string) (string, error) {
		return runCLI(ctx, append(append([]string{"cert", "revoke"}, args...), api...)...)
	}
	if msg, err := revoke(serial["kept"]); err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "--cert FILE") {
		t.Errorf("revoke an unknown serial: %v\n%s; want 404 naming --cert FILE", err, msg)
	}
	for _, bad := range [][]string{
		{"--cert", serial["kept-file"], serial["kept"]},
		{"--cert", serial["kept-file"], "--force-unknown-serial"},
		{},
	} {
		if msg, err := revoke(bad...); err == nil {
			t.Errorf("cert revoke %q accepted:\n%s", bad, msg)
		}
	}
	if msg, err := revoke("--cert", serial["kept-file"], "--reason", "keyCompromise"); err != nil || !strings.Contains(msg, "revoked "+serial["kept"]) || !strings.Contains(msg, "CRL number") {
		t.Fatalf("revoke --cert: %v\n%s", err, msg)
	}
	if msg, err := revoke("--force-unknown-serial", serial["lost"], "--reason", "keyCompromise", "--comment", "file gone"); err != nil || !strings.Contains(msg, "revoked "+serial["lost"]) {
		t.Fatalf("revoke --force-unknown-serial: %v\n%s", err, msg)
	}
	for _, name := range []string{"kept", "lost"} {
		msg, err := runCLI(ctx, append([]string{"cert", "list", "--serial", serial[name]}, api...)...)
		if err != nil || !strings.Contains(msg, "revoked (keyCompromise") || !strings.Contains(msg, "not in the CA database") {
			t.Errorf("cert list --serial %s (%s): %v\n%s", serial[name], name, err, msg)
		}
	}
}
