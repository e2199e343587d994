package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/imapgate/imapgate/testenv"
)

// TestEnrollUICommand: --check loads the file, opens the module and the
// credentials; flags override the file; hash-password reads stdin.
func TestEnrollUICommand(t *testing.T) {
	hsm := testenv.SoftHSM(t)
	c := testenv.StartCA(t)
	cfg := filepath.Join(t.TempDir(), "enroll-ui.yaml")
	// A public listen address without TLS is refused; --listen overrides it.
	body := fmt.Sprintf("listen: 192.0.2.10:8088\nmodule: %s\nca_url: %s\nagent_cred: %s\n", hsm.Module, c.URL, c.EnrollCred)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runTokenCLI(t, "", "enroll-ui", "--config", cfg, "--check"); err == nil || !strings.Contains(err.Error(), "tls_cert") {
		t.Fatalf("--check of a public address without TLS: %v", err)
	}
	out, err := runTokenCLI(t, "", "enroll-ui", "--config", cfg, "--check", "--listen", "127.0.0.1:8088")
	if err != nil || !strings.Contains(out, "enroll-ui config OK") {
		t.Fatalf("--check with --listen: %v\n%s", err, out)
	}
	if _, err := runTokenCLI(t, "", "enroll-ui", "--config", cfg, "--check", "--listen", "127.0.0.1:8088", "--agent-cred", t.TempDir()); err == nil {
		t.Fatal("--check accepted an empty credential directory")
	}
	out, err = runTokenCLI(t, "a long operator password\n", "enroll-ui", "hash-password")
	if err != nil {
		t.Fatal(err)
	}
	hash := strings.TrimSpace(out)
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte("a long operator password")) != nil {
		t.Fatalf("hash-password printed %q", out)
	}
	if _, err := runTokenCLI(t, "short\n", "enroll-ui", "hash-password"); err == nil {
		t.Fatal("hash-password accepted a short password")
	}
}
