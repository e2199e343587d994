package testenv

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// PKI is a throwaway, stdlib-only certificate authority for tests: a root, an
// intermediate that signs leaves and CRLs, and helpers to write them to files. It stands
// in for the real CA (ca/) so the front's tests do not depend on it.
type PKI struct {
	Root         *x509.Certificate
	RootKey      crypto.Signer
	Intermediate *x509.Certificate
	InterKey     crypto.Signer

	mu        sync.Mutex
	serial    int64
	crlNumber int64
	revoked   []x509.RevocationListEntry
}

// KeyType selects the leaf key algorithm.
type KeyType int

// Key types for leaves.
const (
	KeyEC256 KeyType = iota
	KeyRSA2048
	// Keys the front must refuse or accept by strength (hostile-input tests).
	KeyRSA1024
	KeyEC384
	KeyEC521
	KeyEd25519
)

// LeafOptions describes a leaf certificate. The zero value is a valid user certificate:
// EC P-256, clientAuth, valid from an hour ago for a day, no e-mail SAN.
type LeafOptions struct {
	CommonName string
	Emails     []string
	DNSNames   []string
	IPs        []net.IP
	EKU        []x509.ExtKeyUsage // default clientAuth; an empty non-nil slice: no EKU at all
	URIs       []*url.URL         // URI SANs, e.g. urn:imapgate:role:admin
	NotBefore  time.Time          // default now-1h
	NotAfter   time.Time          // default now+24h
	Key        KeyType
}

// Leaf is an issued certificate with its key.
type Leaf struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*x509.Certificate // leaf, intermediate
}

// NewPKI creates a root and an intermediate CA with EC P-256 keys.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	p := &PKI{serial: 100}
	rootKey := mustEC(t)
	now := time.Now()
	rootTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "imapgate test root", Organization: []string{"imapgate tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	p.Root = mustCreate(t, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	p.RootKey = rootKey
	interKey := mustEC(t)
	interTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(2),
		Subject:               pkix.Name{CommonName: "imapgate test intermediate", Organization: []string{"imapgate tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(9 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	p.Intermediate = mustCreate(t, interTmpl, p.Root, interKey.Public(), rootKey)
	p.InterKey = interKey
	return p
}

// NewIntermediate makes another intermediate under the same root (as a CA with a second
// issuing key would); leaves come from it with IssueBy.
func (p *PKI) NewIntermediate(t testing.TB, name string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key := mustEC(t)
	p.mu.Lock()
	p.serial++
	serial := big.NewInt(p.serial)
	p.mu.Unlock()
	now := time.Now()
	cert := mustCreate(t, &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"imapgate tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(9 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, p.Root, key.Public(), p.RootKey)
	return cert, key
}

// IssueBy signs a leaf with another issuer (see NewIntermediate).
func (p *PKI) IssueBy(t testing.TB, o LeafOptions, issuer *x509.Certificate, key crypto.Signer) *Leaf {
	t.Helper()
	return p.issue(t, o, issuer, key)
}

// Pool returns a pool holding the root only.
func (p *PKI) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.Root)
	return pool
}

// Issue signs a leaf with the intermediate.
func (p *PKI) Issue(t testing.TB, o LeafOptions) *Leaf {
	t.Helper()
	return p.issue(t, o, p.Intermediate, p.InterKey)
}

// SelfSigned makes a self-signed leaf with the given options (no CA involved).
func SelfSigned(t testing.TB, o LeafOptions) *Leaf {
	t.Helper()
	key := newKey(t, o.Key)
	tmpl := leafTemplate(o, big.NewInt(7))
	cert := mustCreate(t, tmpl, tmpl, key.Public(), key)
	return &Leaf{Cert: cert, Key: key, Chain: []*x509.Certificate{cert}}
}

func (p *PKI) issue(t testing.TB, o LeafOptions, parent *x509.Certificate, parentKey crypto.Signer) *Leaf {
	p.mu.Lock()
	p.serial++
	serial := big.NewInt(p.serial)
	p.mu.Unlock()
	key := newKey(t, o.Key)
	cert := mustCreate(t, leafTemplate(o, serial), parent, key.Public(), parentKey)
	return &Leaf{Cert: cert, Key: key, Chain: []*x509.Certificate{cert, parent}}
}

func leafTemplate(o LeafOptions, serial *big.Int) *x509.Certificate {
	now := time.Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(24 * time.Hour)
	}
	if o.EKU == nil {
		o.EKU = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if o.CommonName == "" && len(o.Emails) > 0 {
		o.CommonName = o.Emails[0]
	}
	return &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{CommonName: o.CommonName},
		NotBefore:      o.NotBefore,
		NotAfter:       o.NotAfter,
		EmailAddresses: o.Emails,
		DNSNames:       o.DNSNames,
		IPAddresses:    o.IPs,
		URIs:           o.URIs,
		ExtKeyUsage:    o.EKU,
		KeyUsage:       x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
}

// Server issues a serverAuth certificate for 127.0.0.1 and localhost.
func (p *PKI) Server(t testing.TB) *Leaf {
	t.Helper()
	return p.Issue(t, LeafOptions{
		CommonName: "localhost",
		DNSNames:   []string{"localhost"},
		IPs:        []net.IP{net.IPv4(127, 0, 0, 1)},
		EKU:        []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}

// TLSCertificate returns the leaf as a tls.Certificate with its chain.
func (l *Leaf) TLSCertificate() tls.Certificate {
	c := tls.Certificate{PrivateKey: l.Key, Leaf: l.Cert}
	for _, x := range l.Chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// WriteFiles writes the leaf chain and key as PEM into dir and returns the paths.
func (l *Leaf) WriteFiles(t testing.TB, dir, name string) (certFile, keyFile string) {
	t.Helper()
	var certPEM []byte
	for _, x := range l.Chain {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: x.Raw})...)
	}
	der, err := x509.MarshalPKCS8PrivateKey(l.Key)
	if err != nil {
		t.Fatalf("testenv: marshal key: %v", err)
	}
	certFile = filepath.Join(dir, name+".crt")
	keyFile = filepath.Join(dir, name+".key")
	WriteFile(t, certFile, certPEM)
	WriteFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	return certFile, keyFile
}

// CertPEM encodes certificates as PEM.
func CertPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// WriteFile writes data to path or fails the test.
func WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// CRLOptions shapes a CRL. Zero times mean thisUpdate=now-1m, nextUpdate=now+1h.
type CRLOptions struct {
	ThisUpdate, NextUpdate time.Time
	Signer                 crypto.Signer     // default: the intermediate's key
	Issuer                 *x509.Certificate // default: the intermediate
	Extra                  int               // this many extra synthetic revoked serials
	Number                 *big.Int          // default: next number
}

// Revoke adds serial to the set of revoked serials later CRLs list.
func (p *PKI) Revoke(serial *big.Int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.revoked = append(p.revoked, x509.RevocationListEntry{SerialNumber: serial, RevocationTime: time.Now().Add(-time.Second)})
}

// CRL signs a DER CRL of the intermediate listing every revoked serial.
func (p *PKI) CRL(t testing.TB, o CRLOptions) []byte {
	t.Helper()
	now := time.Now()
	if o.ThisUpdate.IsZero() {
		o.ThisUpdate = now.Add(-time.Minute)
	}
	if o.NextUpdate.IsZero() {
		o.NextUpdate = now.Add(time.Hour)
	}
	if o.Signer == nil {
		o.Signer = p.InterKey
	}
	if o.Issuer == nil {
		o.Issuer = p.Intermediate
	}
	p.mu.Lock()
	p.crlNumber++
	num := big.NewInt(p.crlNumber)
	entries := append([]x509.RevocationListEntry(nil), p.revoked...)
	p.mu.Unlock()
	if o.Number != nil {
		num = o.Number
	}
	for i := 0; i < o.Extra; i++ {
		entries = append(entries, x509.RevocationListEntry{
			SerialNumber:   new(big.Int).SetInt64(int64(1_000_000 + i)),
			RevocationTime: o.ThisUpdate,
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    num,
		ThisUpdate:                o.ThisUpdate,
		NextUpdate:                o.NextUpdate,
		RevokedCertificateEntries: entries,
	}, o.Issuer, o.Signer)
	if err != nil {
		t.Fatalf("testenv: create CRL: %v", err)
	}
	return der
}

func newKey(t testing.TB, k KeyType) crypto.Signer {
	switch k {
	case KeyRSA2048, KeyRSA1024:
		bits := 2048
		if k == KeyRSA1024 {
			bits = 1024
		}
		key, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatalf("testenv: rsa key: %v", err)
		}
		return key
	case KeyEC384, KeyEC521:
		curve := elliptic.P384()
		if k == KeyEC521 {
			curve = elliptic.P521()
		}
		key, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			t.Fatalf("testenv: ec key: %v", err)
		}
		return key
	case KeyEd25519:
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatalf("testenv: ed25519 key: %v", err)
		}
		return key
	default:
		return mustEC(t)
	}
}

func mustEC(t testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testenv: ec key: %v", err)
	}
	return key
}

func mustCreate(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatalf("testenv: create certificate %q: %v", tmpl.Subject.CommonName, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testenv: parse certificate: %v", err)
	}
	return c
}
