package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/pkcs11"
	"github.com/imapgate/imapgate/testenv"
)

// runTokenCLI runs the imapgate command line in-process.
func runTokenCLI(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// tokenPINFile writes a PIN file the way a help desk would (0600).
func tokenPINFile(t *testing.T, pin string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(p, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTokenListAndShow(t *testing.T) {
	hsm := testenv.SoftHSM(t)
	out, err := runTokenCLI(t, "", "token", "list", "--module", hsm.Module)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^imapgate-test\s+[0-9a-f]+\s+SoftHSM project\s+SoftHSM v2\s+ok$`).MatchString(out) ||
		!strings.Contains(out, "profile softhsm2") || !strings.Contains(out, "NOT-INITIALIZED") {
		t.Fatalf("token list:\n%s", out)
	}
	out, err = runTokenCLI(t, "", "token", "show", "--module", hsm.Module, "--token", hsm.Label, "--pin-file", tokenPINFile(t, hsm.PIN))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "token imapgate-test") || !strings.Contains(out, "model         SoftHSM v2") {
		t.Fatalf("token show:\n%s", out)
	}
}

// loosePINFile is a PIN file with mode 0644, as an editor or a careless
// echo leaves it.
func loosePINFile(t *testing.T, pin string) string {
	t.Helper()
	p := tokenPINFile(t, pin)
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTokenCLIErrors(t *testing.T) {
	hsm := testenv.SoftHSM(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no such module", []string{"token", "list", "--module", "/nonexistent/opensc-pkcs11.so"}, "does not exist"},
		{"not a module", []string{"token", "list", "--module", "/etc/passwd"}, "is not a PKCS#11 module"},
		{"no such token", []string{"token", "show", "--module", hsm.Module, "--token", "bobs-card"}, `no token labelled or numbered "bobs-card"`},
		{"wrong PIN", []string{"token", "show", "--module", hsm.Module, "--token", hsm.Label, "--pin-file", tokenPINFile(t, "000000")}, "wrong PIN"},
		{"missing PIN file", []string{"token", "show", "--module", hsm.Module, "--token", hsm.Label, "--pin-file", "/nonexistent/pin"}, "PIN file: open /nonexistent/pin"},
		{"PIN file others can read", []string{"token", "show", "--module", hsm.Module, "--token", hsm.Label, "--pin-file", loosePINFile(t, hsm.PIN)}, "run chmod 600"},
		{"bad key type", []string{"token", "enroll", "--module", hsm.Module, "--token", hsm.Label, "--pin-file", tokenPINFile(t, hsm.PIN),
			"--user", "alice@example.org", "--key-type", "rsa-1024", "--ca", "https://127.0.0.1:1", "--cred", t.TempDir()}, "unknown key type"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := runTokenCLI(t, "", c.args...)
			if err == nil {
				t.Fatalf("no error; output:\n%s", out)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
			if strings.Contains(err.Error(), "000000") || strings.Contains(err.Error(), hsm.PIN) {
				t.Fatalf("error shows a PIN: %q", err)
			}
		})
	}
}

// TestTokenEnrollEndToEnd is the help desk's path against a real imapgate
// CA: enroll on SoftHSM2 with the enrollment-agent credential, see the
// certificate on the token, have a CA refusal leave nothing behind, wipe.
func TestTokenEnrollEndToEnd(t *testing.T) {
	hsm := testenv.SoftHSM(t)
	ca := testenv.StartCA(t)
	pin := tokenPINFile(t, hsm.PIN)
	base := []string{"--module", hsm.Module, "--token", hsm.Label, "--pin-file", pin, "--ca", ca.URL, "--cred", ca.EnrollCred}

	out, err := runTokenCLI(t, "", append([]string{"token", "enroll", "--user", "alice@example.org"}, base...)...)
	if err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	for _, re := range []string{`(?m)^user\s+alice@example.org$`, `(?m)^serial\s+[0-9A-F]+$`, `(?m)^not after\s+\d{4}-\d\d-\d\dT`,
		`(?m)^token serial\s+[0-9a-f]+$`, `(?m)^key\s+ec-p256, ID [0-9a-f]{32}, label imapgate-alice@example.org$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("enroll summary lacks %s:\n%s", re, out)
		}
	}
	if strings.Contains(out, "warning") {
		t.Errorf("enroll warned:\n%s", out)
	}
	serial := regexp.MustCompile(`(?m)^serial\s+([0-9A-F]+)$`).FindStringSubmatch(out)[1]

	// The certificate on the token chains to the CA root and names alice.
	show, err := runTokenCLI(t, "", "token", "show", "--module", hsm.Module, "--token", hsm.Label, "--pin-file", pin)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(show, "serial "+serial) || !strings.Contains(show, "email alice@example.org") || !strings.Contains(show, "private-key") {
		t.Fatalf("token show after enroll:\n%s", show)
	}
	der := exportCert(t, hsm, "imapgate-alice@example.org")
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Root)
	inter := x509.NewCertPool()
	inter.AddCert(ca.Intermediate)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the certificate on the token does not verify: %v", err)
	}

	// The token holds alice's credential: a second enrollment needs --replace.
	carol := []string{"token", "enroll", "--user", "carol@example.org", "--key-type", "rsa-2048"}
	out, err = runTokenCLI(t, "", append(carol, base...)...)
	if err == nil || !strings.Contains(err.Error(), "already holds the credential of alice@example.org (serial "+serial) || !strings.Contains(err.Error(), "--replace") {
		t.Fatalf("second enrollment without --replace: %v\n%s", err, out)
	}
	// With it (RSA 2048 this time), carol's credential takes alice's place,
	// and the receipt names alice's serial for revocation.
	out, err = runTokenCLI(t, "", append(append(carol, "--replace"), base...)...)
	if err != nil || !regexp.MustCompile(`(?m)^key\s+rsa-2048, ID [0-9a-f]{32}, label imapgate-carol@example.org$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^replaced\s+alice@example.org, serial `+serial+`: revoke it \(imapgate cert revoke `+serial+` --reason superseded\)$`).MatchString(out) {
		t.Fatalf("enroll rsa-2048 --replace: %v\n%s", err, out)
	}

	// A CSR the CA refuses: the key must not stay on the token.
	for _, refused := range [][]string{
		{"--user", "bob@example.org", "--validity-days", "50000", "--replace"},
		{"--user", "bob", "--replace"},
	} {
		out, err := runTokenCLI(t, "", append(append([]string{"token", "enroll"}, refused...), base...)...)
		if err == nil || !strings.Contains(err.Error(), "the CA did not issue a certificate") ||
			!strings.Contains(err.Error(), "removed from the token again") {
			t.Fatalf("refused enrollment %v: %v\n%s", refused, err, out)
		}
	}
	mod, err := pkcs11.Open(hsm.Module)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := mod.OpenToken(hsm.Label)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Login(pkcs11.NewPIN(hsm.PIN)); err != nil {
		t.Fatal(err)
	}
	objs, err := tok.Objects()
	tok.Close()
	mod.Close()
	if err != nil {
		t.Fatal(err)
	}
	// carol's key pair and certificate, the CA certificates of the chain the
	// CA sent (the intermediate): nothing of alice (replaced) or bob (refused).
	var carolObjs, caCerts int
	for _, o := range objs {
		switch {
		case o.Label == "imapgate-carol@example.org":
			carolObjs++
		case o.Cert != nil && o.Cert.IsCA:
			caCerts++
		default:
			t.Errorf("unexpected object after refused enrollments: %+v", o)
		}
	}
	if carolObjs != 3 || caCerts < 1 {
		t.Fatalf("after refused enrollments: %d objects of carol (want 3), %d CA certificates", carolObjs, caCerts)
	}

	// Wipe: refused without the label typed, done with it.
	wipe := []string{"token", "wipe", "--module", hsm.Module, "--token", hsm.Label, "--pin-file", pin}
	if out, err := runTokenCLI(t, "no\n", wipe...); err == nil || !strings.Contains(err.Error(), "nothing deleted") {
		t.Fatalf("unconfirmed wipe: %v\n%s", err, out)
	}
	out, err = runTokenCLI(t, hsm.Label+"\n", wipe...)
	if want := fmt.Sprintf("deleted %d of %d objects", len(objs), len(objs)); err != nil || !strings.Contains(out, want) {
		t.Fatalf("wipe: %v\n%s", err, out)
	}
}

// exportCert reads a certificate back with p11tool (GnuTLS via p11-kit),
// an independent PKCS#11 consumer.
func exportCert(t *testing.T, hsm *testenv.SoftHSMToken, label string) []byte {
	t.Helper()
	cmd := exec.Command("p11tool", "--export", "pkcs11:token="+hsm.Label+";object="+strings.ReplaceAll(label, "@", "%40")+";type=cert")
	cmd.Env = hsm.Env()
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("p11tool --export: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	b, _ := pem.Decode(out)
	if b == nil {
		t.Fatalf("p11tool exported no PEM:\n%s", out)
	}
	return b.Bytes
}

func TestTokenPINCommands(t *testing.T) {
	hsm := testenv.SoftHSM(t)
	base := []string{"--module", hsm.Module, "--token", hsm.Label}
	newPIN := tokenPINFile(t, "86428642")
	if out, err := runTokenCLI(t, "", append([]string{"token", "pin", "--pin-file", tokenPINFile(t, hsm.PIN), "--new-pin-file", newPIN}, base...)...); err != nil {
		t.Fatalf("pin: %v\n%s", err, out)
	}
	if _, err := runTokenCLI(t, "", append([]string{"token", "show", "--pin-file", newPIN}, base...)...); err != nil {
		t.Fatalf("login with the changed PIN: %v", err)
	}
	reset := tokenPINFile(t, "97539753")
	if out, err := runTokenCLI(t, "", append([]string{"token", "unblock", "--so-pin-file", tokenPINFile(t, hsm.SOPIN), "--new-pin-file", reset}, base...)...); err != nil {
		t.Fatalf("unblock: %v\n%s", err, out)
	}
	if _, err := runTokenCLI(t, "", append([]string{"token", "show", "--pin-file", reset}, base...)...); err != nil {
		t.Fatalf("login with the PIN the SO set: %v", err)
	}
}
