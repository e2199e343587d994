package pkcs11

import (
	"bytes"
	"context"
	"crypto/x509"
	"testing"
)

// caCertsOn lists the CA certificates on the token.
func caCertsOn(t *testing.T, tok *Token) []*x509.Certificate {
	t.Helper()
	objs, err := tok.Objects()
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for _, o := range objs {
		if o.Class == ClassCertificate && o.Cert != nil && o.Cert.IsCA {
			out = append(out, o.Cert)
		}
	}
	return out
}

func holds(certs []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range certs {
		if bytes.Equal(x.Raw, c.Raw) {
			return true
		}
	}
	return false
}

// TestEnrollWritesChainWithRoots: a CA that sends leaf and intermediate (as
// imapgate's does) and the credential's roots give the token the whole
// chain; Replace at another CA takes the old CA's certificates off, and a
// foreign root in Roots is not written.
func TestEnrollWritesChainWithRoots(t *testing.T) {
	s := newSoftToken(t)
	caA, caB, other := newTestCA(t), newTestCA(t), newTestCA(t)
	noRoot := func(ca *testCA) SignFunc {
		return func(ctx context.Context, csr []byte) ([]*x509.Certificate, error) {
			chain, err := ca.sign(ctx, csr)
			if err != nil {
				return nil, err
			}
			return chain[:2], nil
		}
	}
	res, err := s.tok.Enroll(context.Background(), EnrollRequest{User: "alice@example.org", PIN: s.pin(), WriteCACerts: true,
		Roots: []*x509.Certificate{other.root, caA.root}}, noRoot(caA))
	if err != nil || len(res.Warnings) != 0 {
		t.Fatalf("enroll: %v %v", err, res)
	}
	got := caCertsOn(t, s.tok)
	if len(got) != 2 || !holds(got, caA.inter) || !holds(got, caA.root) {
		t.Fatalf("CA certificates after enroll: %d, want A's intermediate and root only", len(got))
	}
	res, err = s.tok.Enroll(context.Background(), EnrollRequest{User: "alice@example.org", PIN: s.pin(), WriteCACerts: true, Replace: true,
		Roots: []*x509.Certificate{caB.root}}, noRoot(caB))
	if err != nil || len(res.Warnings) != 0 {
		t.Fatalf("enroll --replace: %v %v", err, res)
	}
	got = caCertsOn(t, s.tok)
	if len(got) != 2 || !holds(got, caB.inter) || !holds(got, caB.root) {
		t.Fatalf("CA certificates after Replace at CA B: %d, want B's intermediate and root only", len(got))
	}
	// Without WriteCACerts, Replace leaves no CA certificate behind.
	if _, err := s.tok.Enroll(context.Background(), EnrollRequest{User: "alice@example.org", PIN: s.pin(), Replace: true}, noRoot(caB)); err != nil {
		t.Fatal(err)
	}
	if got = caCertsOn(t, s.tok); len(got) != 0 {
		t.Fatalf("%d CA certificates after Replace without WriteCACerts, want 0", len(got))
	}
}
