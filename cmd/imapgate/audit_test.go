package main

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/testenv"
)

// TestAuditCommand: `imapgate audit` lists a server issuance and a refused
// request (who, what, why) for an admin, and hides both from an agent.
func TestAuditCommand(t *testing.T) {
	c := testenv.StartCA(t)
	ctx := context.Background()
	if out, err := runCLI(ctx, "cert", "server", "--ca", c.URL, "--cred", c.AdminCred, "--dns", "mail.example.org", "--out", t.TempDir()); err != nil {
		t.Fatalf("cert server: %v\n%s", err, out)
	}
	if _, err := runCLI(ctx, "cert", "server", "--ca", c.URL, "--cred", c.EnrollCred, "--dns", "evil.example.org", "--out", t.TempDir()); err == nil {
		t.Fatal("an agent got a server certificate")
	}
	out, err := runCLI(ctx, "audit", "--ca", c.URL, "--cred", c.AdminCred)
	if err != nil {
		t.Fatalf("audit: %v\n%s", err, out)
	}
	for _, re := range []string{
		`(?m)^\S+\s+CN=first admin \(admin\)\s+issue-server\s+ok\s+[0-9A-F]+\s+mail.example.org\s*$`,
		`(?m)^\S+\s+CN=test help desk \(enroll\)\s+issue-server\s+refused\s+-\s+-\s+the enroll role may not do this`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("audit lacks %s:\n%s", re, out)
		}
	}
	out, err = runCLI(ctx, "audit", "--ca", c.URL, "--cred", c.EnrollCred, "--json")
	if err != nil || strings.Contains(out, "issue-server") {
		t.Errorf("an agent's audit shows server entries: %v\n%s", err, out)
	}
}
