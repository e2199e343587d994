package ca_test

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

// TestIntermediateKeyInHSM: with a kms URI the intermediate key is generated in
// a PKCS#11 token (SoftHSM2 here) and never written to disk; certificates and
// the CRL are signed on the token.
func TestIntermediateKeyInHSM(t *testing.T) {
	tok := testenv.SoftHSM(t)
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte(tok.PIN), 0o600); err != nil {
		t.Fatal(err)
	}
	kms := "pkcs11:module-path=" + tok.Module + ";token=" + tok.Label + "?pin-source=" + pinFile
	c := testenv.StartCA(t, testenv.CAOptions{KMS: kms})
	if _, err := os.Stat(filepath.Join(c.Dir, ca.IntermediateKeyFile)); err == nil {
		t.Fatal("an intermediate key file was written although the key is in the HSM")
	}
	cfg := c.CA.Config()
	if cfg.Keys.KMS != kms || !strings.HasPrefix(cfg.Keys.IntermediateKey, "pkcs11:id=") {
		t.Fatalf("config keys = %+v", cfg.Keys)
	}
	ctx := context.Background()
	iss, err := client(t, c, c.EnrollCred).Sign(ctx, caclient.SignRequest{CSR: csrPEM(t, ecKey(t), csrOpts{}), User: "hsm@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if err := iss.Chain[0].CheckSignatureFrom(c.Intermediate); err != nil {
		t.Fatal(err)
	}
	if _, err := client(t, c, c.AdminCred).Revoke(ctx, iss.Serial, "keyCompromise", ""); err != nil {
		t.Fatal(err)
	}
	if _, ok := crlHas(fetchCRL(t, c), iss.Serial); !ok { // fetchCRL checks the signature
		t.Fatal("revoked serial missing from the HSM-signed CRL")
	}
	// pkcs11-tool (OpenSC) sees the key on the token as non-extractable.
	out := testenv.RunTool(t, tok.Env(), "pkcs11-tool", "--module", tok.Module, "--token-label", tok.Label,
		"--login", "--pin", tok.PIN, "--list-objects", "--type", "privkey")
	if !strings.Contains(out, "imapgate-intermediate") || !strings.Contains(out, "never extractable") {
		t.Fatalf("pkcs11-tool does not show a non-extractable imapgate-intermediate key:\n%s", out)
	}
}
