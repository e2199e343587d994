package pkcs11

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imapgate/imapgate/testenv"
)

// softToken is a fresh SoftHSM2 token opened through this package, logged
// out. Module and session are closed by t.Cleanup.
type softToken struct {
	env *testenv.SoftHSMToken
	mod *Module
	tok *Token
}

func newSoftToken(t testing.TB) *softToken {
	t.Helper()
	env := testenv.SoftHSM(t)
	return openSoftToken(t, env, env.Module)
}

// faultToken is a fresh SoftHSM2 token opened through the p11fault module,
// which injects the faults SoftHSM2 cannot produce (testenv.P11Fault).
type faultToken struct {
	*softToken
	fault *testenv.P11Fault
}

func newFaultToken(t testing.TB) *faultToken {
	t.Helper()
	env := testenv.SoftHSM(t)
	f := testenv.NewP11Fault(t, env)
	return &faultToken{softToken: openSoftToken(t, env, f.Module), fault: f}
}

// openSoftToken opens env's token through the module at path.
func openSoftToken(t testing.TB, env *testenv.SoftHSMToken, path string) *softToken {
	t.Helper()
	mod, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := mod.Close(); err != nil {
			t.Error(err)
		}
	})
	tok, err := mod.OpenToken(env.Label)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tok.Close() })
	return &softToken{env: env, mod: mod, tok: tok}
}

func (s *softToken) pin() *PIN   { return NewPIN(s.env.PIN) }
func (s *softToken) soPIN() *PIN { return NewPIN(s.env.SOPIN) }

// testCA is a throwaway two-level CA built with crypto/x509 — a stand-in for
// imapgate's CA where a test needs only "sign this CSR".
type testCA struct {
	root, inter       *x509.Certificate
	rootKey, interKey crypto.Signer
	serial            int64
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	ca := &testCA{serial: 1000}
	rk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ik, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	rt := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "imapgate test root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	ca.root = mustCert(t, rt, rt, rk.Public(), rk)
	it := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "imapgate test intermediate"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	ca.inter = mustCert(t, it, ca.root, ik.Public(), rk)
	ca.rootKey, ca.interKey = rk, ik
	return ca
}

func mustCert(t testing.TB, tmpl, parent *x509.Certificate, pub any, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sign issues a client certificate for a CSR, checking its signature first
// like a real CA does.
func (ca *testCA) sign(_ context.Context, csrDER []byte) ([]*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, err
	}
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial), Subject: csr.Subject, EmailAddresses: csr.EmailAddresses,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.inter, csr.PublicKey, ca.interKey)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return []*x509.Certificate{c, ca.inter, ca.root}, nil
}

// serverCert is a TLS server certificate for 127.0.0.1 from the test CA.
func (ca *testCA) serverCert(t testing.TB) (*x509.Certificate, crypto.Signer) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	return mustCert(t, tmpl, ca.inter, k.Public(), ca.interKey), k
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.root)
	return p
}

// writePEM writes certificates to a file in dir and returns its path.
func writePEM(t testing.TB, dir, name string, certs ...*x509.Certificate) string {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// refusingCA fails like a CA that rejects the CSR.
func refusingCA(context.Context, []byte) ([]*x509.Certificate, error) {
	return nil, errors.New("ca: sign: 403 forbidden: user not allowed")
}
