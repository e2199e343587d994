package pkcs11

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"strings"
	"testing"

	p11 "github.com/miekg/pkcs11"
)

func TestEnroll(t *testing.T) {
	for _, kt := range []KeyType{KeyECP256, KeyRSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			s := newSoftToken(t)
			ca := newTestCA(t)
			res, err := s.tok.Enroll(context.Background(), EnrollRequest{
				User: "alice@example.org", KeyType: kt, PIN: s.pin(), WriteCACerts: true,
			}, ca.sign)
			if err != nil {
				t.Fatal(err)
			}
			if res.User != "alice@example.org" || res.Label != "imapgate-alice@example.org" || res.TokenLabel != s.env.Label ||
				res.TokenSerial == "" || res.Serial == "" || res.NotAfter.IsZero() || len(res.Warnings) != 0 {
				t.Fatalf("result %+v", res)
			}
			leaf := res.Certificate
			if leaf.Subject.CommonName != "alice@example.org" || len(leaf.EmailAddresses) != 1 || leaf.EmailAddresses[0] != "alice@example.org" {
				t.Errorf("certificate identity: CN %q SAN %v", leaf.Subject.CommonName, leaf.EmailAddresses)
			}
			objs, err := s.tok.Objects()
			if err != nil {
				t.Fatal(err)
			}
			var gotCert, gotPriv, gotPub, gotCA int
			for _, o := range objs {
				switch {
				case o.Class == ClassCertificate && bytes.Equal(o.ID, res.KeyID):
					gotCert++
					if !bytes.Equal(o.Cert.Raw, leaf.Raw) || o.Label != res.Label {
						t.Errorf("certificate object %q holds another certificate", o.Label)
					}
					// The attributes NSS needs to show and pair it.
					a := readAttrs(t, s.tok, o.h, p11.CKA_PRIVATE, p11.CKA_ISSUER, p11.CKA_SERIAL_NUMBER, p11.CKA_SUBJECT, p11.CKA_CERTIFICATE_TYPE)
					serial, _ := asn1.Marshal(leaf.SerialNumber)
					if a[p11.CKA_PRIVATE][0] != 0 || !bytes.Equal(a[p11.CKA_ISSUER], leaf.RawIssuer) ||
						!bytes.Equal(a[p11.CKA_SERIAL_NUMBER], serial) || !bytes.Equal(a[p11.CKA_SUBJECT], leaf.RawSubject) ||
						ulong(a[p11.CKA_CERTIFICATE_TYPE]) != p11.CKC_X_509 {
						t.Errorf("certificate object attributes: %x", a)
					}
				case o.Class == ClassPrivateKey && bytes.Equal(o.ID, res.KeyID):
					gotPriv++
				case o.Class == ClassPublicKey && bytes.Equal(o.ID, res.KeyID):
					gotPub++
				case o.Class == ClassCertificate && o.Cert != nil && o.Cert.IsCA:
					gotCA++
				}
			}
			if gotCert != 1 || gotPriv != 1 || gotPub != 1 || gotCA != 2 {
				t.Fatalf("objects: cert %d priv %d pub %d ca %d, want 1 1 1 2", gotCert, gotPriv, gotPub, gotCA)
			}
			// A second enrollment is refused, and writes nothing...
			_, err = s.tok.Enroll(context.Background(), EnrollRequest{User: "bob@example.org", KeyType: kt, WriteCACerts: true}, ca.sign)
			if err == nil || !strings.Contains(err.Error(), "already holds the credential of alice@example.org (serial "+res.Serial) || !strings.Contains(err.Error(), "--replace") {
				t.Fatalf("second enrollment without Replace: %v", err)
			}
			if after, _ := s.tok.Objects(); len(after) != len(objs) {
				t.Fatalf("a refused enrollment changed the token: %d objects, had %d", len(after), len(objs))
			}
			// The key found again by ID signs for a chain the CA accepts.
			k, err := s.tok.FindKey(res.KeyID)
			if err != nil {
				t.Fatal(err)
			}
			if !samePublicKey(k.Public, leaf.PublicKey) {
				t.Error("FindKey returned another key")
			}
			// ...unless it replaces: bob's credential in, alice's out, no
			// duplicate CA certificates.
			res2, err := s.tok.Enroll(context.Background(), EnrollRequest{User: "bob@example.org", KeyType: kt, WriteCACerts: true, Replace: true}, ca.sign)
			if err != nil {
				t.Fatal(err)
			}
			if len(res2.Replaced) != 1 || res2.Replaced[0].SerialNumber.Cmp(leaf.SerialNumber) != 0 || len(res2.Warnings) != 0 {
				t.Errorf("replaced %v, warnings %q; want alice's serial %s", res2.Replaced, res2.Warnings, res.Serial)
			}
			creds, err := s.tok.Credentials()
			if err != nil || len(creds) != 1 || !bytes.Equal(creds[0].ID, res2.KeyID) || len(creds[0].Certs) != 1 || creds[0].Certs[0].EmailAddresses[0] != "bob@example.org" {
				t.Fatalf("credentials after replace: %v, %v", creds, err)
			}
			if _, err := s.tok.FindKey(res.KeyID); err == nil {
				t.Error("alice's key is still on the token after the replacement")
			}
			objs, _ = s.tok.Objects()
			if n := countClass(objs, ClassCertificate); n != 3 {
				t.Errorf("%d certificates after the replacement, want 3 (bob + 2 CA)", n)
			}
			// Wipe removes exactly imapgate's objects.
			plan, err := s.tok.WipePlan()
			if err != nil {
				t.Fatal(err)
			}
			if len(plan) != 5 {
				t.Errorf("wipe plan has %d objects, want 5", len(plan))
			}
			if n, err := s.tok.Wipe(plan); err != nil || n != 5 {
				t.Fatalf("wipe: %d, %v", n, err)
			}
			if objs, _ := s.tok.Objects(); len(objs) != 0 {
				t.Fatalf("after wipe: %+v", objs)
			}
		})
	}
}

func countClass(objs []Object, c ObjectClass) int {
	n := 0
	for _, o := range objs {
		if o.Class == c {
			n++
		}
	}
	return n
}

func TestEnrollFailuresLeaveNoObjects(t *testing.T) {
	otherKeyCA := func(t *testing.T) SignFunc {
		// A CA that answers with a certificate for some other key.
		ca := newTestCA(t)
		return func(context.Context, []byte) ([]*x509.Certificate, error) {
			c, _ := ca.serverCert(t)
			return []*x509.Certificate{c}, nil
		}
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name      string
		req       func(s *softToken) EnrollRequest
		sign      func(t *testing.T) SignFunc
		ctx       context.Context
		wantErr   error
		wantMsg   string
		keyMade   bool
		noObjects bool
	}{
		{name: "CA refuses", sign: func(*testing.T) SignFunc { return refusingCA },
			wantMsg: "the CA did not issue a certificate: ca: sign: 403", keyMade: true},
		{name: "CA returns nothing", sign: func(*testing.T) SignFunc {
			return func(context.Context, []byte) ([]*x509.Certificate, error) { return nil, nil }
		}, wantMsg: "returned no certificate", keyMade: true},
		{name: "certificate for another key", sign: otherKeyCA, wantMsg: "for a different key", keyMade: true},
		{name: "wrong PIN", req: func(s *softToken) EnrollRequest {
			return EnrollRequest{User: "alice@example.org", PIN: NewPIN("000000")}
		}, wantErr: ErrPINIncorrect},
		{name: "no PIN, not logged in", req: func(s *softToken) EnrollRequest {
			return EnrollRequest{User: "alice@example.org"}
		}, wantErr: ErrNotLoggedIn},
		{name: "bad user", req: func(s *softToken) EnrollRequest {
			return EnrollRequest{User: "Alice <alice@example.org>", PIN: s.pin()}
		}, wantMsg: "not a mailbox login"},
		{name: "bad key type", req: func(s *softToken) EnrollRequest {
			return EnrollRequest{User: "alice@example.org", PIN: s.pin(), KeyType: "dsa-1024"}
		}, wantMsg: "unknown key type"},
		{name: "canceled", ctx: canceled, wantErr: context.Canceled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSoftToken(t)
			tok := s.tok
			req := EnrollRequest{User: "alice@example.org", PIN: s.pin()}
			if c.req != nil {
				req = c.req(s)
			}
			sign := newTestCA(t).sign
			if c.sign != nil {
				sign = c.sign(t)
			}
			ctx := c.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			res, err := tok.Enroll(ctx, req, sign)
			if err == nil {
				t.Fatalf("enrolled: %+v", res)
			}
			if c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Errorf("got %v, want %v", err, c.wantErr)
			}
			if !strings.Contains(err.Error(), c.wantMsg) {
				t.Errorf("error %q does not say %q", err, c.wantMsg)
			}
			if c.keyMade && !strings.Contains(err.Error(), "removed from the token again") {
				t.Errorf("error %q does not say the key was removed", err)
			}
			if strings.Contains(err.Error(), s.env.PIN) {
				t.Errorf("error shows the PIN")
			}
			// Look with a logged-in session: nothing may be left.
			if err := s.tok.Login(s.pin()); err != nil {
				t.Fatal(err)
			}
			objs, err := s.tok.Objects()
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) != 0 {
				t.Fatalf("failed enrollment left %d objects: %+v", len(objs), objs)
			}
		})
	}
}
