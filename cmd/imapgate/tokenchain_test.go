package main

import (
	"encoding/hex"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/testenv"
)

// tokenCertIDs lists the certificate objects on the token with pkcs11-tool
// (OpenSC, a PKCS#11 consumer imapgate did not write): label → CKA_ID hex.
func tokenCertIDs(t *testing.T, hsm *testenv.SoftHSMToken) map[string]string {
	t.Helper()
	out := testenv.RunTool(t, hsm.Env(), "pkcs11-tool", "--module", hsm.Module, "--token-label", hsm.Label, "--list-objects", "--type", "cert")
	ids := map[string]string{}
	re := regexp.MustCompile(`(?m)^\s*label:\s*(.*?)\s*\n(?:.*\n)*?\s*ID:\s*([0-9a-f]+)`)
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		ids[m[1]] = m[2]
	}
	if len(ids) == 0 {
		t.Fatalf("pkcs11-tool listed no certificates:\n%s", out)
	}
	return ids
}

// TestTokenEnrollCarriesChain: enroll writes the intermediate and the root
// onto the token by default, NSS builds the whole chain from the token
// alone, and --replace against another CA leaves none of the old CA's
// certificates behind; --no-ca-certs writes none.
func TestTokenEnrollCarriesChain(t *testing.T) {
	hsm := testenv.SoftHSM(t)
	caA, caB := testenv.StartCA(t), testenv.StartCA(t)
	pin := tokenPINFile(t, hsm.PIN)
	tok := []string{"--module", hsm.Module, "--token", hsm.Label, "--pin-file", pin}
	enroll := func(c *testenv.CA, extra ...string) string {
		t.Helper()
		args := append(append([]string{"token", "enroll", "--user", "alice@example.org", "--ca", c.URL, "--cred", c.EnrollCred}, tok...), extra...)
		out, err := runTokenCLI(t, "", args...)
		if err != nil || strings.Contains(out, "warning") {
			t.Fatalf("enroll %v: %v\n%s", extra, err, out)
		}
		return out
	}
	skid := func(c *testenv.CA) (inter, root string) {
		return hex.EncodeToString(c.Intermediate.SubjectKeyId), hex.EncodeToString(c.Root.SubjectKeyId)
	}
	values := func(m map[string]string) []string {
		var v []string
		for _, id := range m {
			v = append(v, id)
		}
		return v
	}

	enroll(caA)
	ids := tokenCertIDs(t, hsm)
	interA, rootA := skid(caA)
	if len(ids) != 3 || !slices.Contains(values(ids), interA) || !slices.Contains(values(ids), rootA) {
		t.Fatalf("after enroll: certificates %v, want alice's, intermediate %s and root %s", ids, interA, rootA)
	}
	// NSS, as Thunderbird loads the card, sees the leaf as a user
	// certificate and both CA certificates beside it.
	db := testenv.NSSDB(t, hsm.Module, hsm.Env())
	list := testenv.RunTool(t, hsm.Env(), "certutil", "-L", "-d", db, "-h", "all")
	for _, re := range []string{`(?m)^` + hsm.Label + `:imapgate-alice@example.org\s+u,u,u`,
		`(?m)^` + hsm.Label + `:imapgate-ca imapgate test Intermediate CA\s`, `(?m)^` + hsm.Label + `:imapgate-ca imapgate test Root CA\s`} {
		if !regexp.MustCompile(re).MatchString(list) {
			t.Errorf("NSS's list of the card lacks %s:\n%s", re, list)
		}
	}

	// Renewed at another CA: its chain replaces the old one.
	enroll(caB, "--replace")
	ids = tokenCertIDs(t, hsm)
	interB, rootB := skid(caB)
	if len(ids) != 3 || !slices.Contains(values(ids), interB) || !slices.Contains(values(ids), rootB) ||
		slices.Contains(values(ids), interA) || slices.Contains(values(ids), rootA) {
		t.Fatalf("after --replace at CA B: certificates %v, want alice's, B's intermediate %s and root %s, none of A's", ids, interB, rootB)
	}

	// --no-ca-certs with --replace: only the leaf is left.
	enroll(caB, "--replace", "--no-ca-certs")
	if ids = tokenCertIDs(t, hsm); len(ids) != 1 {
		t.Fatalf("after --no-ca-certs --replace: certificates %v, want alice's only", ids)
	}
	// The old flag is still accepted (and does what is now the default).
	out := enroll(caB, "--replace", "--write-ca-certs")
	if ids = tokenCertIDs(t, hsm); len(ids) != 3 || !strings.Contains(out, "deprecated") {
		t.Fatalf("--write-ca-certs: certificates %v\n%s", ids, out)
	}
	if _, err := runTokenCLI(t, "", append([]string{"token", "enroll", "--user", "alice@example.org", "--ca", caB.URL, "--cred", caB.EnrollCred, "--write-ca-certs", "--no-ca-certs"}, tok...)...); err == nil {
		t.Error("--write-ca-certs with --no-ca-certs was accepted")
	}
}
