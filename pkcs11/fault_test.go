package pkcs11

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/imapgate/imapgate/testenv"
)

// The tests in this file run the real SoftHSM2 through p11fault
// (testenv.NewP11Fault), a PKCS#11 module that forwards every call and
// injects the faults SoftHSM2 cannot produce: it never locks a PIN nor
// counts tries down, cannot be pulled out, and is never full.

// TestFaultPINCounter: a card with three tries, counted down by wrong PINs,
// says how many are left, then that it is locked; a locked card refuses even
// the right PIN and an enrollment, and the SO PIN unblocks it.
func TestFaultPINCounter(t *testing.T) {
	s := newFaultToken(t)
	wrong := NewPIN("000000")
	s.fault.Set(t, testenv.Fault{Mode: testenv.FaultPINCountLow})
	if ti, err := s.tok.Refresh(); err != nil || !ti.Flags.PINCountLow || ti.Flags.PINFinalTry {
		t.Fatalf("count low: flags %v, %v", ti.Flags.Words(), err)
	}
	for _, c := range []struct {
		name    string
		pin     *PIN
		wantErr error
		wantMsg string
		final   bool
		locked  bool
	}{
		{"wrong PIN, count low", wrong, ErrPINIncorrect, "1 try left: one more wrong PIN locks the token", true, false},
		{"wrong PIN on the final try", wrong, ErrPINLocked, "the user PIN is now locked", false, true},
		{"right PIN on a locked token", s.pin(), ErrPINLocked, "unblock it with the SO PIN or PUK (imapgate token unblock)", false, true},
	} {
		err := s.tok.Login(c.pin)
		if !errors.Is(err, c.wantErr) || !strings.Contains(err.Error(), c.wantMsg) {
			t.Fatalf("%s: %v; want %v saying %q", c.name, err, c.wantErr, c.wantMsg)
		}
		if errors.Is(err, ErrPINFinalTry) != c.final {
			t.Fatalf("%s: %v: ErrPINFinalTry %v, want %v", c.name, err, !c.final, c.final)
		}
		if f := s.tok.Info().Flags; f.PINFinalTry != c.final || f.PINLocked != c.locked {
			t.Fatalf("%s: flags %v", c.name, f.Words())
		}
	}
	ca := newTestCA(t)
	if _, err := s.tok.Enroll(context.Background(), EnrollRequest{User: "alice@example.org", PIN: s.pin()}, ca.sign); !errors.Is(err, ErrPINLocked) {
		t.Fatalf("enroll a locked token: %v", err)
	}
	if err := s.tok.ChangePIN(s.pin(), NewPIN("24682468")); !errors.Is(err, ErrPINLocked) {
		t.Fatalf("change the PIN of a locked token: %v", err)
	}
	if err := s.tok.ResetPIN(s.soPIN(), NewPIN("24682468")); err != nil {
		t.Fatalf("unblock with the SO PIN: %v", err)
	}
	if ti, _ := s.tok.Refresh(); ti.Flags.PINLocked || ti.Flags.PINFinalTry {
		t.Fatalf("still locked after the unblock: %v", ti.Flags.Words())
	}
	if err := s.tok.Login(NewPIN("24682468")); err != nil {
		t.Fatalf("the new PIN after the unblock: %v", err)
	}
	if objs, err := s.tok.Objects(); err != nil || len(objs) != 0 {
		t.Fatalf("the refused enrollment wrote %d objects (%v)", len(objs), err)
	}
	// A good PIN on the final try resets the counter.
	s.fault.Set(t, testenv.Fault{Mode: testenv.FaultFinalTry})
	if ti, _ := s.tok.Refresh(); !ti.Flags.PINFinalTry {
		t.Fatalf("final try: flags %v", ti.Flags.Words())
	}
	if err := s.tok.Login(NewPIN("24682468")); err != nil {
		t.Fatal(err)
	}
	if ti, _ := s.tok.Refresh(); ti.Flags.PINFinalTry || ti.Flags.PINCountLow {
		t.Fatalf("a good PIN left the counter low: %v", ti.Flags.Words())
	}
}

// TestFaultTokenFull: a full token fails the key generation or the
// certificate's write with ErrTokenFull, says what to do, and keeps nothing
// of the enrollment.
func TestFaultTokenFull(t *testing.T) {
	for _, c := range []struct {
		name    string
		on      []string
		wantMsg string
	}{
		{"no room for the key", nil, "no objects were written"},
		{"no room for the certificate", []string{"C_CreateObject"}, "the new key was removed from the token again"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newFaultToken(t)
			s.fault.Set(t, testenv.Fault{Mode: testenv.FaultMemoryFull, On: c.on})
			if ti, _ := s.tok.Refresh(); ti.FreePublicMemory != 0 || ti.FreePrivateMemory != 0 {
				t.Errorf("a full token reports %d/%d bytes free", ti.FreePublicMemory, ti.FreePrivateMemory)
			}
			_, err := s.tok.Enroll(context.Background(), EnrollRequest{User: "alice@example.org", PIN: s.pin(), WriteCACerts: true}, newTestCA(t).sign)
			if !errors.Is(err, ErrTokenFull) || !strings.Contains(err.Error(), "imapgate token wipe") || !strings.Contains(err.Error(), c.wantMsg) {
				t.Fatalf("enroll a full token: %v", err)
			}
			s.fault.Clear(t)
			if objs := s.loggedInObjects(t, s.tok); len(objs) != 0 {
				t.Fatalf("the full token keeps %d objects of the failed enrollment: %+v", len(objs), objs)
			}
		})
	}
}

// TestFaultTokenPulledOut pulls the token out at every call of an
// enrollment in turn — answering the calls after with CKR_DEVICE_REMOVED or
// CKR_SESSION_HANDLE_INVALID — and puts it back. Each time the enrollment
// fails with ErrTokenGone and leaves no certificate, or it had written the
// credential already and warns; a key whose certificate never came is
// removed by the token's next enrollment, which must then succeed without
// Replace.
func TestFaultTokenPulledOut(t *testing.T) {
	s := newFaultToken(t)
	ca := newTestCA(t)
	req := EnrollRequest{User: "alice@example.org", PIN: s.pin(), WriteCACerts: true, Roots: []*x509.Certificate{ca.root}}
	tok := s.tok
	var orphans, warned int
	for n := 0; ; n++ {
		if n > 400 {
			t.Fatal("the enrollment never got through: does the token come back?")
		}
		rv := uint(p11.CKR_DEVICE_REMOVED)
		if n%2 == 1 {
			rv = p11.CKR_SESSION_HANDLE_INVALID
		}
		s.fault.Set(t, testenv.Fault{Mode: testenv.FaultRemoveAfter, After: n, RV: rv})
		res, err := tok.Enroll(context.Background(), req, ca.sign)
		present, _ := s.mod.Tokens()
		pulled := len(present) == 0
		s.fault.Clear(t) // put back
		// A session does not survive the removal: open the token again,
		// as the UI does for every action.
		_ = tok.Close()
		var oerr error
		if tok, oerr = s.mod.OpenToken(s.env.Label); oerr != nil {
			t.Fatalf("after %d calls: the token put back: %v", n, oerr)
		}
		if err == nil {
			if !pulled && len(res.Warnings) != 0 {
				t.Fatalf("untroubled enrollment warns: %q", res.Warnings)
			}
			s.assertEnrolled(t, tok, res)
			if !pulled {
				t.Logf("an enrollment makes %d calls; pulled out after each: %d left a key without a certificate (removed by the next enrollment), %d had written the credential and warned", n, orphans, warned)
				break
			}
			// Pulled out after the certificate was written: a complete
			// credential, with a warning if the CA certificates were cut
			// short (none when the removal came after the enrollment).
			if len(res.Warnings) > 0 {
				warned++
			}
			s.wipe(t, tok)
			continue
		}
		if !pulled {
			t.Fatalf("after %d calls: enrollment failed with the token present: %v", n, err)
		}
		if !errors.Is(err, ErrTokenGone) || !strings.Contains(err.Error(), "insert it again") {
			t.Fatalf("after %d calls: %v, want ErrTokenGone", n, err)
		}
		objs := s.loggedInObjects(t, tok)
		if len(objs) == 0 {
			continue
		}
		if nc := countClass(objs, ClassCertificate); nc != 0 || len(objs) != 2 || !bytes.Equal(objs[0].ID, objs[1].ID) {
			t.Fatalf("after %d calls: a failed enrollment left %d certificates among %+v", n, nc, objs)
		}
		if !errors.Is(err, ErrKeyLeft) || !strings.Contains(err.Error(), "stays on the token without a certificate until the token's next enrollment removes it") {
			t.Fatalf("after %d calls: the error does not say the key stays: %v", n, err)
		}
		orphans++
		again, err := tok.Enroll(context.Background(), req, ca.sign)
		if err != nil {
			t.Fatalf("after %d calls: the next enrollment: %v", n, err)
		}
		if len(again.Warnings) != 1 || !strings.Contains(again.Warnings[0], "left by an interrupted enrollment") {
			t.Fatalf("after %d calls: the next enrollment's warnings: %q", n, again.Warnings)
		}
		s.assertEnrolled(t, tok, again)
		s.wipe(t, tok)
	}
	if orphans == 0 || warned == 0 {
		t.Fatalf("no removal fell between key and certificate (%d) or after the certificate (%d): the sweep tests nothing", orphans, warned)
	}
	_ = tok.Close()
}

// TestFaultTokenPulledOutReplacing: a token pulled out before the new
// certificate is written keeps the credential it had; the next replacement
// removes the stray key and succeeds.
func TestFaultTokenPulledOutReplacing(t *testing.T) {
	s := newFaultToken(t)
	ca := newTestCA(t)
	first, req, tok, err := s.pulledOutReplacing(t, ca)
	if !errors.Is(err, ErrTokenGone) {
		t.Fatalf("replacement with the token pulled out: %v", err)
	}
	if err := tok.Login(s.pin()); err != nil {
		t.Fatal(err)
	}
	creds, err := tok.Credentials()
	if err != nil || len(creds) != 2 {
		t.Fatalf("credentials after the interrupted replacement: %v, %v; want alice's and the stray key", creds, err)
	}
	for _, c := range creds {
		if len(c.Certs) == 1 && c.Certs[0].SerialNumber.Cmp(first.Certificate.SerialNumber) != 0 {
			t.Fatalf("alice's credential changed: %v", c)
		}
	}
	res, err := tok.Enroll(context.Background(), req, ca.sign)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Replaced) != 1 || res.Replaced[0].SerialNumber.Cmp(first.Certificate.SerialNumber) != 0 {
		t.Fatalf("replaced %v, want alice's %s", res.Replaced, first.Serial)
	}
	s.assertEnrolled(t, tok, res)
}

// pulledOutReplacing enrolls alice, then replaces her credential with bob's
// while the token is pulled out at the certificate's write, and puts it
// back: it returns alice's enrollment, bob's request, a new session on the
// token (closed with the test) and the replacement's error.
func (s *faultToken) pulledOutReplacing(t *testing.T, ca *testCA) (*EnrollResult, EnrollRequest, *Token, error) {
	t.Helper()
	first, err := s.tok.Enroll(context.Background(), EnrollRequest{User: "alice@example.org", PIN: s.pin()}, ca.sign)
	if err != nil {
		t.Fatal(err)
	}
	s.fault.Set(t, testenv.Fault{Mode: testenv.FaultRemoveAfter, On: []string{"C_CreateObject"}})
	req := EnrollRequest{User: "bob@example.org", PIN: s.pin(), Replace: true}
	_, rerr := s.tok.Enroll(context.Background(), req, ca.sign)
	s.fault.Clear(t)
	_ = s.tok.Close()
	tok, err := s.mod.OpenToken(s.env.Label)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tok.Close() })
	return first, req, tok, rerr
}

// TestFaultTokenInsertion: a token out of the reader is not listed and
// cannot be opened; put back it is listed again, while a session opened
// before the removal stays dead.
func TestFaultTokenInsertion(t *testing.T) {
	s := newFaultToken(t)
	s.fault.Set(t, testenv.Fault{Mode: testenv.FaultHidden})
	if list, err := s.mod.Tokens(); err != nil || len(list) != 0 {
		t.Fatalf("tokens with the token out: %+v, %v", list, err)
	}
	if _, err := s.mod.OpenToken(s.env.Label); !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), "insert the card") {
		t.Fatalf("open a token that is out: %v", err)
	}
	if _, err := s.tok.Objects(); !errors.Is(err, ErrTokenGone) {
		t.Fatalf("a session on a token that is out: %v", err)
	}
	s.fault.Clear(t)
	if _, err := s.mod.FindToken(s.env.Serial); err != nil {
		t.Fatalf("the token put back: %v", err)
	}
	if _, err := s.tok.Objects(); !errors.Is(err, ErrTokenGone) {
		t.Fatalf("a session from before the removal, after it: %v", err)
	}
	tok, err := s.mod.OpenToken(s.env.Serial)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	if _, err := tok.Objects(); err != nil {
		t.Fatalf("a new session on the token put back: %v", err)
	}
}

// loggedInObjects lists what tok holds after a user login.
func (s *softToken) loggedInObjects(t *testing.T, tok *Token) []Object {
	t.Helper()
	if err := tok.Login(s.pin()); err != nil {
		t.Fatal(err)
	}
	defer tok.Logout()
	objs, err := tok.Objects()
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// assertEnrolled checks tok holds res's credential and nothing else of
// imapgate's but CA certificates: one key pair, one user certificate.
func (s *softToken) assertEnrolled(t *testing.T, tok *Token, res *EnrollResult) {
	t.Helper()
	var keys, certs int
	for _, o := range s.loggedInObjects(t, tok) {
		switch {
		case o.Class == ClassPrivateKey || o.Class == ClassPublicKey:
			keys++
			if !bytes.Equal(o.ID, res.KeyID) {
				t.Fatalf("a stray key %q (%x) beside the credential %x", o.Label, o.ID, res.KeyID)
			}
		case o.Class == ClassCertificate && o.Cert != nil && !o.Cert.IsCA:
			certs++
			if !bytes.Equal(o.Cert.Raw, res.Certificate.Raw) {
				t.Fatalf("another user certificate %s", SerialHex(o.Cert.SerialNumber))
			}
		}
	}
	if keys != 2 || certs != 1 {
		t.Fatalf("%d key objects and %d user certificates, want 2 and 1", keys, certs)
	}
}

// wipe empties tok of imapgate's objects for the next round.
func (s *softToken) wipe(t *testing.T, tok *Token) {
	t.Helper()
	if err := tok.Login(s.pin()); err != nil {
		t.Fatal(err)
	}
	defer tok.Logout()
	plan, err := tok.WipePlan()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tok.Wipe(plan); err != nil {
		t.Fatal(err)
	}
}

// TestStrayKeyNeedsNoCertificate: only a key with no certificate of its ID
// at all is taken for an interrupted enrollment's. A credential whose public
// key object is gone (so its certificate cannot be paired by key) is kept,
// and an enrollment without Replace refuses the token.
func TestStrayKeyNeedsNoCertificate(t *testing.T) {
	s := newSoftToken(t)
	ca := newTestCA(t)
	alice, err := s.tok.Enroll(context.Background(), EnrollRequest{User: "alice@example.org", PIN: s.pin()}, ca.sign)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.tok.removeID(alice.KeyID, p11.CKO_PUBLIC_KEY); err != nil {
		t.Fatal(err)
	}
	if _, err := s.tok.Enroll(context.Background(), EnrollRequest{User: "bob@example.org", PIN: s.pin()}, ca.sign); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Fatalf("enroll over a credential without its public key object: %v", err)
	}
	if _, err := s.tok.FindKey(alice.KeyID); err != nil {
		t.Fatalf("alice's key: %v", err)
	}
}

// TestFaultRemoveLeftKey: the key a replacement left when the token was
// pulled out before its certificate was written is named by the
// KeyLeftError, and RemoveLeftKey removes exactly that key pair once the
// token is back: not without the right PIN (a private key is invisible
// before a user login), not while a certificate has its ID, not for another
// public key; alice's credential and an unrelated key stay.
func TestFaultRemoveLeftKey(t *testing.T) {
	s := newFaultToken(t)
	first, _, tok, err := s.pulledOutReplacing(t, newTestCA(t))
	var kl *KeyLeftError
	if !errors.As(err, &kl) || !errors.Is(err, ErrKeyLeft) || !errors.Is(err, ErrTokenGone) || len(kl.ID) == 0 || kl.Public == nil {
		t.Fatalf("replacement with the token pulled out: %v (%+v), want a KeyLeftError naming the key", err, kl)
	}
	// Another key without a certificate (as a second interrupted
	// enrollment would leave): not the one this job left, so it stays.
	if err := tok.Login(s.pin()); err != nil {
		t.Fatal(err)
	}
	other, err := tok.GenerateKey(KeyECP256, "imapgate-other")
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Logout(); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name    string
		pin     *PIN
		pub     func() any
		cert    bool // a certificate with the key's ID on the token
		wantErr error
	}{
		{"wrong PIN", NewPIN("000999"), func() any { return kl.Public }, false, ErrPINIncorrect},
		{"another public key", s.pin(), func() any { return other.Public }, false, ErrNotLeftKey},
		{"a certificate with its ID", s.pin(), func() any { return kl.Public }, true, ErrNotLeftKey},
	} {
		if c.cert {
			if err := tok.WriteCertificate(first.Certificate, kl.ID, "imapgate-bob@example.org"); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := tok.RemoveLeftKey(c.pin, kl.ID, c.pub()); n != 0 || !errors.Is(err, c.wantErr) {
			t.Fatalf("%s: removed %d (%v), want none and %v", c.name, n, err, c.wantErr)
		}
		if c.cert {
			if err := tok.removeID(kl.ID, p11.CKO_CERTIFICATE); err != nil {
				t.Fatal(err)
			}
		}
		if keys := countClass(s.loggedInObjects(t, tok), ClassPrivateKey); keys != 3 {
			t.Fatalf("%s: %d private keys left, want alice's, the other and the leftover", c.name, keys)
		}
	}
	if err := tok.Logout(); err != nil {
		t.Fatal(err)
	}
	n, err := tok.RemoveLeftKey(s.pin(), kl.ID, kl.Public)
	if err != nil || n != 2 {
		t.Fatalf("remove the leftover key: %d objects, %v; want its 2", n, err)
	}
	var keys int
	for _, o := range s.loggedInObjects(t, tok) {
		if o.Class == ClassPrivateKey || o.Class == ClassPublicKey {
			keys++
			if bytes.Equal(o.ID, kl.ID) || !bytes.Equal(o.ID, first.KeyID) && !bytes.Equal(o.ID, other.ID) {
				t.Fatalf("after the removal: key %x (%q)", o.ID, o.Label)
			}
		}
	}
	if keys != 4 {
		t.Fatalf("after the removal %d key objects, want alice's pair and the other pair", keys)
	}
	if err := tok.Login(s.pin()); err != nil {
		t.Fatal(err)
	}
	if cs, err := tok.Credentials(); err != nil || len(cs) != 2 {
		t.Fatalf("credentials after the removal: %v, %v", cs, err)
	}
	if n, err := tok.RemoveLeftKey(s.pin(), kl.ID, kl.Public); n != 0 || err != nil {
		t.Fatalf("remove it again: %d, %v; want 0 and no error", n, err)
	}
}
