package pkcs11

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	p11 "github.com/miekg/pkcs11"
)

func TestProfileFor(t *testing.T) {
	cases := []struct {
		path, manufacturer, description, want string
	}{
		{"/usr/lib/softhsm/libsofthsm2.so", "SoftHSM", "Implementation of PKCS11", "softhsm2"},
		{"/usr/lib/x86_64-linux-gnu/libykcs11.so.2", "Yubico (www.yubico.com)", "PKCS#11 PIV Library (SP-800-73)", "ykcs11"},
		{"/opt/yubico/lib/libykcs11.so", "", "", "ykcs11"},
		{"/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so", "OpenSC Project", "OpenSC smartcard framework", "generic"},
		{"/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so", "PKCS#11 Kit", "PKCS#11 Kit Proxy Module", "generic"},
	}
	for _, c := range cases {
		t.Run(c.want+" "+c.path, func(t *testing.T) {
			got := profileFor(c.path, p11.Info{ManufacturerID: c.manufacturer, LibraryDescription: c.description})
			if got.Name != c.want {
				t.Fatalf("profile %s, want %s", got.Name, c.want)
			}
		})
	}
}

// TestKeyTemplates pins down the templates each profile sends: every
// protection attribute explicit for SoftHSM2/generic; for ykcs11 only what
// its whitelist takes, and never CKA_EXTRACTABLE.
func TestKeyTemplates(t *testing.T) {
	for _, name := range []string{"softhsm2", "generic", "ykcs11"} {
		prof, _ := ProfileByName(name)
		for _, kt := range []KeyType{KeyECP256, KeyRSA2048} {
			t.Run(name+"/"+string(kt), func(t *testing.T) {
				pub, priv, _, err := prof.keyTemplates(kt, []byte{1}, "imapgate-x")
				if err != nil {
					t.Fatal(err)
				}
				pm := templateMap(priv)
				for ty, want := range map[uint]byte{p11.CKA_TOKEN: 1, p11.CKA_PRIVATE: 1, p11.CKA_SENSITIVE: 1, p11.CKA_SIGN: 1, p11.CKA_DECRYPT: 0} {
					if v, ok := pm[ty]; !ok || len(v) != 1 || v[0] != want {
						t.Errorf("private template attribute 0x%x = %v, want %d", ty, v, want)
					}
				}
				ext, hasExt := pm[p11.CKA_EXTRACTABLE]
				if prof.ExtractableAttr != hasExt || (hasExt && ext[0] != 0) {
					t.Errorf("CKA_EXTRACTABLE: present %v value %v; profile says %v", hasExt, ext, prof.ExtractableAttr)
				}
				if name == "ykcs11" {
					for _, a := range pub {
						if !fakeYKPubAllowed[a.Type] {
							t.Errorf("public template has 0x%x, which ykcs11 rejects", a.Type)
						}
					}
					for _, a := range priv {
						if !fakeYKPrivAllowed[a.Type] {
							t.Errorf("private template has 0x%x, which ykcs11 rejects", a.Type)
						}
					}
				}
			})
		}
	}
}

func templateMap(tmpl []*p11.Attribute) map[uint][]byte {
	m := map[uint][]byte{}
	for _, a := range tmpl {
		m[a.Type] = a.Value
	}
	return m
}

// openFakeYK opens the ykcs11 fake (see ykcs11_fake_test.go: a fake, because
// CI has no YubiKey) through the same code path as a real module.
func openFakeYK(t *testing.T) (*fakeYK, *Token) {
	t.Helper()
	f := newFakeYK()
	m, err := newModule("/usr/lib/x86_64-linux-gnu/libykcs11.so", f)
	if err != nil {
		t.Fatal(err)
	}
	if m.Profile().Name != "ykcs11" {
		t.Fatalf("profile %s for the ykcs11 fake", m.Profile().Name)
	}
	tok, err := m.OpenToken(fakeYKSerial)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	return f, tok
}

func TestYKCS11FakeEnroll(t *testing.T) {
	f, tok := openFakeYK(t)
	ca := newTestCA(t)
	req := EnrollRequest{User: "alice@example.org", PIN: NewPIN(fakeYKPIN), SOPIN: NewPIN(fakeYKMgmKey), WriteCACerts: true}
	res, err := tok.Enroll(context.Background(), req, ca.sign)
	if err != nil {
		t.Fatalf("enroll: %v (rejected templates: %v)", err, f.rejections)
	}
	if !bytes.Equal(res.KeyID, []byte{0x01}) {
		t.Errorf("key ID %x, want 01 (PIV slot 9a)", res.KeyID)
	}
	// Key generation and import as SO, signing as user, SO logged out after.
	want := []string{"generate:so", "sign:user", "create:so"}
	if strings.Join(f.calls, " ") != strings.Join(want, " ") {
		t.Errorf("calls %v, want %v", f.calls, want)
	}
	if f.login != noLogin {
		t.Errorf("token left logged in (%d)", f.login)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "CA certificates") {
		t.Errorf("warnings %q, want one about CA certificates not fitting on a PIV token", res.Warnings)
	}
	// The certificate sits in slot 9a beside its key.
	var certs int
	for _, o := range f.objs {
		if o.class == p11.CKO_CERTIFICATE {
			certs++
			if !bytes.Equal(o.attrs[p11.CKA_ID], []byte{1}) || !bytes.Equal(o.attrs[p11.CKA_VALUE], res.Certificate.Raw) {
				t.Errorf("certificate object %x", o.attrs[p11.CKA_ID])
			}
		}
	}
	if certs != 1 || len(f.objs) != 3 {
		t.Errorf("%d objects, %d certificates; want 3 and 1", len(f.objs), certs)
	}
	// Wipe takes slot 9a (labels are ykcs11's own) after an SO login.
	if err := tok.Login(NewPIN(fakeYKPIN)); err != nil {
		t.Fatal(err)
	}
	plan, err := tok.WipePlan()
	if err != nil || len(plan) != 3 {
		t.Fatalf("wipe plan %d objects, %v", len(plan), err)
	}
	if err := tok.LoginSO(NewPIN(fakeYKMgmKey)); err != nil {
		t.Fatal(err)
	}
	if n, err := tok.Wipe(plan); n != 3 || err != nil {
		t.Fatalf("wipe %d, %v", n, err)
	}
}

func TestYKCS11FakeEnrollFailures(t *testing.T) {
	bigCert := func(ctx context.Context, csr []byte) ([]*x509.Certificate, error) {
		chain, err := newTestCA(t).sign(ctx, csr)
		if err != nil {
			return nil, err
		}
		c := *chain[0]
		c.Raw = make([]byte, 4000) // more than a PIV object holds
		return []*x509.Certificate{&c}, nil
	}
	cases := []struct {
		name    string
		req     EnrollRequest
		sign    SignFunc
		wantErr error
		wantMsg string
	}{
		{name: "no management key", req: EnrollRequest{User: "a@example.org", PIN: NewPIN(fakeYKPIN)},
			wantMsg: "PIV management key"},
		{name: "wrong management key", req: EnrollRequest{User: "a@example.org", PIN: NewPIN(fakeYKPIN), SOPIN: NewPIN(strings.Repeat("00", 24))},
			wantErr: ErrPINIncorrect},
		// The PIN is checked before the SO login and the key generation,
		// which would overwrite slot 9a.
		{name: "wrong PIN", req: EnrollRequest{User: "a@example.org", PIN: NewPIN("000000"), SOPIN: NewPIN(fakeYKMgmKey)},
			wantErr: ErrPINIncorrect},
		{name: "CA refuses", req: EnrollRequest{User: "a@example.org", PIN: NewPIN(fakeYKPIN), SOPIN: NewPIN(fakeYKMgmKey)},
			sign: refusingCA, wantMsg: "removed from the token again"},
		{name: "certificate too big for a PIV slot", req: EnrollRequest{User: "a@example.org", PIN: NewPIN(fakeYKPIN), SOPIN: NewPIN(fakeYKMgmKey)},
			sign: bigCert, wantErr: ErrTokenFull, wantMsg: "removed from the token again"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, tok := openFakeYK(t)
			sign := c.sign
			if sign == nil {
				sign = newTestCA(t).sign
			}
			_, err := tok.Enroll(context.Background(), c.req, sign)
			if err == nil {
				t.Fatal("enrolled")
			}
			if c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Errorf("got %v, want %v", err, c.wantErr)
			}
			if !strings.Contains(err.Error(), c.wantMsg) {
				t.Errorf("error %q does not say %q", err, c.wantMsg)
			}
			if len(f.objs) != 0 {
				t.Errorf("failed enrollment left %d objects on the YubiKey", len(f.objs))
			}
			if len(f.rejections) != 0 {
				t.Errorf("ykcs11 rejected our templates: %v", f.rejections)
			}
		})
	}
}

func TestYKCS11FakeGenerateNeedsSO(t *testing.T) {
	_, tok := openFakeYK(t)
	if err := tok.Login(NewPIN(fakeYKPIN)); err != nil {
		t.Fatal(err)
	}
	_, err := tok.GenerateKey(KeyECP256, "x")
	if !errors.Is(err, ErrNotLoggedIn) || !strings.Contains(err.Error(), "management key") {
		t.Fatalf("keygen as user: %v", err)
	}
}

// TestPINLockout walks a PIN down to locked and back with the PUK, on the
// ykcs11 fake: SoftHSM2 never locks, so this is where the help desk's
// messages are checked.
func TestPINLockout(t *testing.T) {
	_, tok := openFakeYK(t)
	steps := []struct {
		pin     string
		wantErr error
		wantMsg string
	}{
		{"111111", ErrPINIncorrect, "few tries left"},
		{"222222", ErrPINIncorrect, "1 try left"},
		{"333333", ErrPINLocked, "unblock it"},
		{fakeYKPIN, ErrPINLocked, "is locked"},
	}
	for i, s := range steps {
		err := tok.Login(NewPIN(s.pin))
		if !errors.Is(err, s.wantErr) || !strings.Contains(err.Error(), s.wantMsg) {
			t.Fatalf("step %d: got %v, want %v saying %q", i, err, s.wantErr, s.wantMsg)
		}
		if strings.Contains(err.Error(), s.pin) {
			t.Fatalf("step %d: error shows the PIN: %v", i, err)
		}
	}
	if ti, _ := tok.Refresh(); !ti.Flags.PINLocked || !strings.Contains(strings.Join(ti.Flags.Words(), ","), "PIN-LOCKED") {
		t.Fatalf("flags after lockout: %+v", ti.Flags)
	}
	// No C_InitPIN on a YubiKey: the PUK unblocks.
	if err := tok.ResetPIN(NewPIN("87654321"), NewPIN("246810")); !errors.Is(err, ErrPINIncorrect) {
		t.Fatalf("unblock with a wrong PUK: %v", err)
	}
	if err := tok.ResetPIN(NewPIN(fakeYKPUK), NewPIN("246810")); err != nil {
		t.Fatalf("unblock with the PUK: %v", err)
	}
	if err := tok.Login(NewPIN("246810")); err != nil {
		t.Fatalf("login after unblock: %v", err)
	}
	if err := tok.ChangePIN(NewPIN("246810"), NewPIN("135791")); err != nil {
		t.Fatalf("change PIN: %v", err)
	}
}

// TestYKCS11FakeUnplugged: pcscd runs but no YubiKey is inserted, so ykcs11
// reports no slots at all (observed with the real module on a machine with
// no reader).
func TestYKCS11FakeUnplugged(t *testing.T) {
	f := newFakeYK()
	f.unplugged = true
	m, err := newModule("/usr/lib/x86_64-linux-gnu/libykcs11.so", f)
	if err != nil {
		t.Fatal(err)
	}
	toks, err := m.Tokens()
	if err != nil || len(toks) != 0 {
		t.Fatalf("tokens %v, %v", toks, err)
	}
	_, err = m.OpenToken(fakeYKSerial)
	if !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), "insert the card or YubiKey") {
		t.Fatalf("got %v", err)
	}
}
