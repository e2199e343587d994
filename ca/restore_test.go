package ca_test

import (
	"context"
	"errors"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/ca"
	"github.com/imapgate/imapgate/caclient"
	"github.com/imapgate/imapgate/testenv"
)

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func wantStatus(t testing.TB, what string, err error, status int, says string) {
	t.Helper()
	var ae *caclient.Error
	if !errors.As(err, &ae) || ae.Status != status || !strings.Contains(ae.Message, says) {
		t.Errorf("%s: %v; want %d saying %q", what, err, status, says)
	}
}

// TestRevokeAfterRestore: the CA's database is restored from a copy taken
// before three certificates were issued. They are unknown to it (404), yet
// an admin revokes two by their files and one by its bare serial; the CRL
// lists all three (openssl reads it), the list shows them with their kinds,
// and the audit trail names the admin. A certificate of another CA (same
// names, other keys) is refused and nothing of it is stored.
func TestRevokeAfterRestore(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "ca")
	db := filepath.Join(dir, "ca.db")
	ctx := context.Background()

	c := testenv.StartCA(t, testenv.CAOptions{Dir: dir})
	old, err := client(t, c, c.EnrollCred).Sign(ctx, caclient.SignRequest{CSR: csrPEM(t, ecKey(t), csrOpts{}), User: "old@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	c.Stop()
	backup := filepath.Join(root, "ca.db.backup")
	copyFile(t, db, backup)

	c = testenv.StartCA(t, testenv.CAOptions{Dir: dir})
	enroll, admin := client(t, c, c.EnrollCred), client(t, c, c.AdminCred)
	alice, err := enroll.Sign(ctx, caclient.SignRequest{CSR: csrPEM(t, ecKey(t), csrOpts{}), User: "alice@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := enroll.Sign(ctx, caclient.SignRequest{CSR: csrPEM(t, ecKey(t), csrOpts{}), User: "bob@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	dns := []string{"mail.example.org"}
	front, err := admin.SignServer(ctx, caclient.ServerRequest{CSR: serverCSR(t, dns[0], dns, nil, nil), DNS: dns})
	if err != nil {
		t.Fatal(err)
	}
	published := fetchCRL(t, c).Number
	c.Stop()
	copyFile(t, backup, db) // the restore

	c = testenv.StartCA(t, testenv.CAOptions{Dir: dir})
	// The restored database holds an older CRL; numbering on from it would
	// repeat a number the fronts have seen.
	if n := fetchCRL(t, c).Number; n.Cmp(published) <= 0 {
		t.Errorf("the restored CA signed CRL %v, and CRL %v was published before the restore: the same number for another CRL, or a lower one a front refuses as a rollback", n, published)
	}
	enroll, admin = client(t, c, c.EnrollCred), client(t, c, c.AdminCred)
	if _, err := c.CA.Certificate(mustSerial(t, old.Serial)); err != nil {
		t.Fatalf("the certificate issued before the backup is gone after the restore: %v", err)
	}
	_, err = admin.Revoke(ctx, alice.Serial, "keyCompromise", "")
	wantStatus(t, "revoke by serial of a certificate issued after the backup", err, http.StatusNotFound, "--cert FILE")

	// An enrollment agent may not revoke at all, by file or not.
	_, err = enroll.RevokeWith(ctx, caclient.RevokeRequest{CertificatePEM: alice.ChainPEM, Reason: "keyCompromise"})
	wantStatus(t, "an agent revoking by file", err, http.StatusForbidden, "needs admin")

	// By file: the chain as 'cert sign' writes it, and a bare leaf.
	rv, err := admin.RevokeWith(ctx, caclient.RevokeRequest{CertificatePEM: alice.ChainPEM, Reason: "keyCompromise", Comment: "card lost after the restore"})
	if err != nil || rv.Serial != alice.Serial || rv.CRLNumber == 0 || rv.CRLPending {
		t.Fatalf("revoke alice by file: %+v, %v", rv, err)
	}
	if _, err := admin.RevokeWith(ctx, caclient.RevokeRequest{CertificatePEM: certPEM(front.Chain[0]), Reason: "superseded"}); err != nil {
		t.Fatalf("revoke the front's certificate by file: %v", err)
	}
	_, err = admin.RevokeWith(ctx, caclient.RevokeRequest{CertificatePEM: alice.ChainPEM, Reason: "keyCompromise"})
	wantStatus(t, "revoke alice by file again", err, http.StatusConflict, "already revoked")
	_, err = admin.RevokeWith(ctx, caclient.RevokeRequest{Serial: bob.Serial, CertificatePEM: alice.ChainPEM})
	wantStatus(t, "a serial that is not the certificate's", err, http.StatusBadRequest, "is not the certificate's serial")

	// By bare serial: refused without the flag, done with it.
	_, err = admin.Revoke(ctx, bob.Serial, "keyCompromise", "")
	wantStatus(t, "bob by serial without --force-unknown-serial", err, http.StatusNotFound, "--force-unknown-serial")
	if _, err := admin.RevokeWith(ctx, caclient.RevokeRequest{Serial: bob.Serial, ForceUnknownSerial: true, Reason: "keyCompromise", Comment: "file gone"}); err != nil {
		t.Fatalf("revoke bob's unknown serial: %v", err)
	}
	_, err = admin.RevokeWith(ctx, caclient.RevokeRequest{Serial: bob.Serial, ForceUnknownSerial: true})
	wantStatus(t, "bob's unknown serial again", err, http.StatusConflict, "already revoked")

	crl := fetchCRL(t, c)
	for _, s := range []string{alice.Serial, bob.Serial, front.Serial} {
		if _, ok := crlHas(crl, s); !ok {
			t.Errorf("the CRL does not list %s", s)
		}
	}
	if _, ok := crlHas(crl, old.Serial); ok {
		t.Error("the CRL lists a certificate nobody revoked")
	}
	out, err := openssl(t, "crl", "-inform", "DER", "-in", writeFile(t, t.TempDir(), "crl.der", crl.Raw), "-noout", "-text")
	if err != nil {
		t.Fatalf("openssl crl -text: %v\n%s", err, out)
	}
	for _, s := range []string{alice.Serial, bob.Serial, front.Serial} {
		if !strings.Contains(out, "Serial Number: "+s) {
			t.Errorf("openssl crl -text does not list %s:\n%s", s, out)
		}
	}

	kinds := map[string]string{alice.Serial: ca.KindUser, front.Serial: ca.KindServer, bob.Serial: ca.KindUnknown}
	users := map[string]string{alice.Serial: "alice@example.org", front.Serial: "", bob.Serial: ""}
	for serial, kind := range kinds {
		list, err := admin.Search(ctx, caclient.CertQuery{Serial: serial})
		if err != nil || len(list) != 1 {
			t.Fatalf("list %s: %+v, %v", serial, list, err)
		}
		if l := list[0]; l.Kind != kind || l.Status != "revoked" || l.User != users[serial] || !strings.Contains(l.IssuedBy.Subject, "not in the CA database") ||
			l.RecordedBy == nil || !strings.Contains(l.RecordedBy.Subject, "first admin") {
			t.Errorf("list %s = %+v; want kind %s, revoked, user %q, issued by unknown", serial, l, kind, users[serial])
		}
	}
	if list, _ := admin.Search(ctx, caclient.CertQuery{Serial: front.Serial}); len(list) == 1 && (len(list[0].DNS) != 1 || list[0].DNS[0] != dns[0]) {
		t.Errorf("the recorded front certificate's names: %v, want %v", list[0].DNS, dns)
	}

	wantAudit := []struct{ serial, action, kind, says string }{
		{alice.Serial, "record-unknown", ca.KindUser, "not in its database"},
		{alice.Serial, "revoke", ca.KindUser, "card lost after the restore"},
		{front.Serial, "record-unknown", ca.KindServer, "not in its database"},
		{bob.Serial, "revoke-unknown-serial", ca.KindUnknown, "file gone"},
	}
	for _, w := range wantAudit {
		entries, err := c.CA.Audit(ca.AuditQuery{Serial: w.serial})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range entries {
			if e.Action == w.action && e.Result == "ok" && e.Kind == w.kind && e.Role == "admin" &&
				strings.Contains(e.Actor, "first admin") && strings.Contains(e.Reason, w.says) {
				found = true
			}
		}
		if !found {
			t.Errorf("no %s entry (ok, kind %s, by the admin, saying %q) for %s: %+v", w.action, w.kind, w.says, w.serial, entries)
		}
	}

	// Another CA's certificate (its names are this CA's, its keys are not).
	other := testenv.StartCA(t)
	foreign, err := client(t, other, other.EnrollCred).Sign(ctx, caclient.SignRequest{CSR: csrPEM(t, ecKey(t), csrOpts{}), User: "mallory@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if foreign.Chain[0].Issuer.String() != c.Intermediate.Subject.String() {
		t.Logf("note: the other CA's issuer name %q differs from this one's %q", foreign.Chain[0].Issuer, c.Intermediate.Subject)
	}
	_, err = admin.RevokeWith(ctx, caclient.RevokeRequest{CertificatePEM: foreign.ChainPEM, Reason: "keyCompromise"})
	wantStatus(t, "a certificate of another CA", err, http.StatusBadRequest, "was not signed by this CA's intermediate")
	fs := mustSerial(t, foreign.Serial)
	if _, err := c.CA.Certificate(fs); !errors.Is(err, ca.ErrNotFound) {
		t.Errorf("the other CA's certificate was stored: %v", err)
	}
	if rev, err := c.CA.IsRevoked(foreign.Chain[0]); err != nil || rev {
		t.Errorf("the other CA's certificate is revoked here: %v, %v", rev, err)
	}
	if list, err := admin.Search(ctx, caclient.CertQuery{Serial: foreign.Serial}); err != nil || len(list) != 0 {
		t.Errorf("the other CA's certificate is listed: %+v, %v", list, err)
	}
	if _, ok := crlHas(fetchCRL(t, c), foreign.Serial); ok {
		t.Error("the other CA's certificate is on this CA's CRL")
	}
	entries, _ := c.CA.Audit(ca.AuditQuery{Serial: foreign.Serial})
	if len(entries) != 1 || entries[0].Result != "refused" || entries[0].Action != "revoke" {
		t.Errorf("the refusal's audit entries: %+v; want one refused revoke", entries)
	}
}

func mustSerial(t testing.TB, s string) *big.Int {
	t.Helper()
	n, err := ca.ParseSerial(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
