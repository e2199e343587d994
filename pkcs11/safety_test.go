package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/imapgate/imapgate/testenv"
)

// TestYKCS11FakeKeepsCredential: slot 9a is overwritten by a key
// generation, so a YubiKey that already holds a credential keeps it through
// a wrong PIN and through an enrollment without Replace.
func TestYKCS11FakeKeepsCredential(t *testing.T) {
	f, tok := openFakeYK(t)
	ca := newTestCA(t)
	req := EnrollRequest{User: "alice@example.org", PIN: NewPIN(fakeYKPIN), SOPIN: NewPIN(fakeYKMgmKey)}
	first, err := tok.Enroll(context.Background(), req, ca.sign)
	if err != nil {
		t.Fatal(err)
	}
	certOnCard := func() []byte {
		for _, o := range f.objs {
			if o.class == p11.CKO_CERTIFICATE {
				return o.attrs[p11.CKA_VALUE]
			}
		}
		return nil
	}
	for _, c := range []struct {
		name    string
		req     EnrollRequest
		wantErr error
		wantMsg string
	}{
		{"wrong PIN", EnrollRequest{User: "alice@example.org", PIN: NewPIN("000000"), SOPIN: NewPIN(fakeYKMgmKey), Replace: true}, ErrPINIncorrect, "wrong PIN"},
		{"no Replace", EnrollRequest{User: "bob@example.org", PIN: NewPIN(fakeYKPIN), SOPIN: NewPIN(fakeYKMgmKey)}, nil, "already holds the credential of alice@example.org"},
	} {
		_, err := tok.Enroll(context.Background(), c.req, ca.sign)
		if err == nil || (c.wantErr != nil && !errors.Is(err, c.wantErr)) || !strings.Contains(err.Error(), c.wantMsg) {
			t.Fatalf("%s: %v", c.name, err)
		}
		if len(f.objs) != 3 || !bytes.Equal(certOnCard(), first.Certificate.Raw) {
			t.Fatalf("%s: the YubiKey lost alice's credential (%d objects)", c.name, len(f.objs))
		}
	}
	req.User, req.Replace = "bob@example.org", true
	second, err := tok.Enroll(context.Background(), req, ca.sign)
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Replaced) != 1 || second.Replaced[0].SerialNumber.Cmp(first.Certificate.SerialNumber) != 0 {
		t.Errorf("replaced %v, want alice's certificate", second.Replaced)
	}
	if len(f.objs) != 3 || !bytes.Equal(certOnCard(), second.Certificate.Raw) {
		t.Errorf("after the replacement: %d objects, bob's certificate on the card: %v", len(f.objs), bytes.Equal(certOnCard(), second.Certificate.Raw))
	}
	// The new key overwrites slot 9a at once: a replacement that fails after
	// that must say the old credential is gone, and name it for revocation.
	req.User = "carol@example.org"
	if _, err := tok.Enroll(context.Background(), req, refusingCA); err == nil ||
		!strings.Contains(err.Error(), "previous credential is gone") || !strings.Contains(err.Error(), second.Serial) {
		t.Fatalf("replacement with a refusing CA: %v", err)
	}
}

// TestWipeSparesOthers: wipe takes imapgate's user objects only — not the
// CA's HSM key (ca init --kms labels it imapgate-intermediate), not a label
// that merely starts with "imapgate", and a data object without CKA_ID does
// not break the listing.
func TestWipeSparesOthers(t *testing.T) {
	s := newSoftToken(t)
	if err := s.tok.Login(s.pin()); err != nil {
		t.Fatal(err)
	}
	for _, label := range []string{"imapgate-intermediate", "imapgateway"} {
		if _, err := s.tok.GenerateKey(KeyECP256, label); err != nil {
			t.Fatal(err)
		}
	}
	s.tok.mu.Lock()
	_, err := s.mod.ctx.CreateObject(s.tok.sh, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_DATA),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_LABEL, "imapgate-note"),
		p11.NewAttribute(p11.CKA_VALUE, []byte("vendor data")),
	})
	s.tok.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.tok.Enroll(context.Background(), EnrollRequest{User: "alice@example.org"}, newTestCA(t).sign)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := s.tok.Objects()
	if err != nil {
		t.Fatalf("objects with a data object on the token: %v", err)
	}
	if len(objs) != 8 {
		t.Fatalf("%d objects, want 8 (2 spare key pairs, a data object, alice's pair and certificate)", len(objs))
	}
	plan, err := s.tok.WipePlan()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range plan {
		if o.Label == "imapgate-intermediate" || o.Label == "imapgateway" {
			t.Errorf("wipe plan takes %s %q", o.Class, o.Label)
		}
	}
	// alice's key pair and certificate, and the data object labelled as ours.
	if len(plan) != 4 {
		t.Errorf("wipe plan has %d objects, want 4", len(plan))
	}
	creds, err := s.tok.Credentials()
	if err != nil || len(creds) != 1 || !bytes.Equal(creds[0].ID, res.KeyID) {
		t.Errorf("credentials %v, %v; want alice's only", creds, err)
	}
}

// TestLoginIsPerProcess: PKCS#11 logins belong to the process, so a second
// Token on the same slot cannot borrow the first one's login (its PIN would
// go unchecked), and closing it does not log the first one out.
func TestLoginIsPerProcess(t *testing.T) {
	s := newSoftToken(t)
	if err := s.tok.Login(s.pin()); err != nil {
		t.Fatal(err)
	}
	other, err := s.mod.OpenToken(s.env.Label)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Login(NewPIN("999999")); err == nil || !strings.Contains(err.Error(), "another session of this process") {
		t.Fatalf("second Token's login with a wrong PIN: %v", err)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	k, err := s.tok.GenerateKey(KeyECP256, "imapgate-x")
	if err != nil {
		t.Fatalf("the first Token lost its login when the second closed: %v", err)
	}
	if _, err := k.Signer().Sign(rand.Reader, make([]byte, 32), crypto.SHA256); err != nil {
		t.Fatal(err)
	}
	// Once the first Token lets go, the second may log in, with its PIN checked.
	if err := s.tok.Logout(); err != nil {
		t.Fatal(err)
	}
	third, err := s.mod.OpenToken(s.env.Label)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if err := third.Login(NewPIN("999999")); !errors.Is(err, ErrPINIncorrect) {
		t.Fatalf("wrong PIN on a free slot: %v", err)
	}
	if err := third.Login(s.pin()); err != nil {
		t.Fatal(err)
	}
}

// TestCloseLeavesForeignInit: when other code in the process initialised the
// library first, closing our Module must not finalise it under that code.
func TestCloseLeavesForeignInit(t *testing.T) {
	env := newSoftToken(t).env // a token, and SOFTHSM2_CONF set for it
	// The other user: an independent context on the same library, as
	// go.step.sm/crypto's KMS has. The softToken above initialised it.
	foreign := p11.New(env.Module)
	if foreign == nil {
		t.Fatal("load module")
	}
	defer foreign.Destroy()
	if err := foreign.Initialize(); err != nil && !errors.Is(err, p11.Error(p11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		t.Fatal(err)
	}
	// Our Open through a symlink: the same library (dlopen follows it), but
	// a share entry of its own whose C_Initialize found it initialised.
	link := filepath.Join(t.TempDir(), "module.so")
	if err := os.Symlink(env.Module, link); err != nil {
		t.Fatal(err)
	}
	m, err := Open(link)
	if err != nil {
		t.Fatal(err)
	}
	if m.shared.ownInit || m.shared.refs != 1 {
		t.Fatalf("the symlinked module shares an entry (ownInit %v, refs %d): the test tests nothing", m.shared.ownInit, m.shared.refs)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := foreign.GetSlotList(true); err != nil {
		t.Fatalf("the other user's context after our Close: %v", err)
	}
}

// TestEnrollLabelsStayFindable: a key imapgate could not find again by its
// label would escape Credentials, Replace and wipe, so Enroll refuses such
// labels, including the CA's reserved ones a user "root" would get.
func TestEnrollLabelsStayFindable(t *testing.T) {
	s := newSoftToken(t)
	ca := newTestCA(t)
	for _, req := range []EnrollRequest{
		{User: "root", PIN: s.pin()},
		{User: "intermediate", PIN: s.pin()},
		{User: "alice@example.org", Label: "Alice mail", PIN: s.pin()},
	} {
		if _, err := s.tok.Enroll(context.Background(), req, ca.sign); err == nil || !strings.Contains(err.Error(), "use a label that starts with") {
			t.Errorf("enroll %q label %q: %v", req.User, req.Label, err)
		}
	}
	if objs, _ := s.tok.Objects(); len(objs) != 0 {
		t.Fatalf("refused enrollments wrote %d objects", len(objs))
	}
	if _, err := s.tok.Enroll(context.Background(), EnrollRequest{User: "alice@example.org", Label: "imapgate-alice mail", PIN: s.pin()}, ca.sign); err != nil {
		t.Fatalf("a custom imapgate- label: %v", err)
	}
}

// TestReplaceReportsEveryCertificate: a key with two certificates (a
// renewal written beside it) loses both on Replace, so both are listed for
// revocation.
func TestReplaceReportsEveryCertificate(t *testing.T) {
	s := newSoftToken(t)
	ca := newTestCA(t)
	first, err := s.tok.Enroll(context.Background(), EnrollRequest{User: "alice@example.org", PIN: s.pin()}, ca.sign)
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.tok.FindKey(first.KeyID)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{EmailAddresses: []string{"alice@example.org"}}, k.Signer())
	if err != nil {
		t.Fatal(err)
	}
	renewal, err := ca.sign(context.Background(), csr)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.tok.WriteCertificate(renewal[0], first.KeyID, first.Label); err != nil {
		t.Fatal(err)
	}
	res, err := s.tok.Enroll(context.Background(), EnrollRequest{User: "bob@example.org", PIN: s.pin(), Replace: true}, ca.sign)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, c := range res.Replaced {
		got[SerialHex(c.SerialNumber)] = true
	}
	if len(res.Replaced) != 2 || !got[first.Serial] || !got[SerialHex(renewal[0].SerialNumber)] {
		t.Errorf("replaced %v, want %s and %s", got, first.Serial, SerialHex(renewal[0].SerialNumber))
	}
}

// TestExpiredPINCanBeChanged: the way out of an expired PIN is token pin,
// which must not stop at the login's CKR_PIN_EXPIRED; a plain login still
// reports it.
func TestExpiredPINCanBeChanged(t *testing.T) {
	// SoftHSM2 never expires a PIN: p11fault does.
	s := newFaultToken(t)
	s.fault.Set(t, testenv.Fault{Mode: testenv.FaultPINExpired})
	if ti, _ := s.tok.Refresh(); !ti.Flags.PINToBeChanged {
		t.Fatalf("an expired PIN: flags %v", ti.Flags.Words())
	}
	if err := s.tok.Login(s.pin()); err == nil || !strings.Contains(err.Error(), "has expired") {
		t.Fatalf("login with an expired PIN: %v", err)
	}
	if err := s.tok.ChangePIN(s.pin(), NewPIN("24682468")); err != nil {
		t.Fatalf("change an expired PIN: %v", err)
	}
	s.tok.Logout()
	if err := s.tok.Login(NewPIN("24682468")); err != nil {
		t.Fatalf("login with the new PIN: %v", err)
	}
	if ti, _ := s.tok.Refresh(); ti.Flags.PINToBeChanged {
		t.Fatalf("still to be changed after the change: %v", ti.Flags.Words())
	}
}
