// Command pki writes the certificates of the benchmark (scripts/bench.sh) into a
// directory: an EC P-256 root, a server certificate for localhost and 127.0.0.1,
// client certificates for one user with an EC P-256 and an RSA-2048 key (subject CN
// and rfc822Name SAN = the e-mail address, clientAuth), and a CRL of the root with
// --revoked unrelated serials. It is a benchmark fixture, not part of imapgate (which
// issues real certificates with `imapgate ca` / `imapgate cert`).
package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

func main() {
	dir := flag.String("dir", "", "directory to write into (required)")
	user := flag.String("user", "alice@example.org", "e-mail address of the client certificates")
	revoked := flag.Int("revoked", 1000, "unrelated serials on the CRL")
	crlOnly := flag.String("crl-only", "", "write only a CRL (DER) with --revoked entries to this file, signed by the root already in --dir")
	resign := flag.String("resign", "", "with --crl-only: the CRL (DER) whose entries the new one carries, unchanged, as a CA's scheduled re-signing does (new number, dates and signature)")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "pki: give --dir")
		os.Exit(2)
	}
	run := run
	if *crlOnly != "" {
		run = func(dir, _ string, revoked int) error { return crlOnlyFile(dir, *crlOnly, revoked, *resign) }
	}
	if err := run(*dir, *user, *revoked); err != nil {
		fmt.Fprintln(os.Stderr, "pki:", err)
		os.Exit(1)
	}
}

func run(dir, user string, revoked int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	now := time.Now()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "imapgate bench root", Organization: []string{"imapgate bench"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	root, err := create(rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return err
	}
	if err := write(dir, "root", root, rootKey); err != nil {
		return err
	}
	leaf := func(name string, key crypto.Signer, server bool) error {
		t := &x509.Certificate{
			SerialNumber: serial(),
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(7 * 24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
		}
		if server {
			t.Subject = pkix.Name{CommonName: "localhost"}
			t.DNSNames = []string{"localhost"}
			t.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
			t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		} else {
			t.Subject = pkix.Name{CommonName: user, Organization: []string{"imapgate bench"}}
			t.EmailAddresses = []string{user}
			t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}
		if _, ok := key.(*rsa.PrivateKey); ok {
			t.KeyUsage |= x509.KeyUsageKeyEncipherment
		}
		c, err := create(t, root, key.Public(), rootKey)
		if err != nil {
			return err
		}
		return write(dir, name, c, key)
	}
	ec1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	if err := leaf("server", ec1, true); err != nil {
		return err
	}
	if err := leaf("client-ec", ec2, false); err != nil {
		return err
	}
	if err := leaf("client-rsa", rsaKey, false); err != nil {
		return err
	}
	der, err := newCRL(root, rootKey, revoked, now)
	if err != nil {
		return err
	}
	crlPEM := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
	rootPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})
	for name, data := range map[string][]byte{
		"crl.der":      der,
		"crl.pem":      crlPEM,
		"root-crl.pem": append(append([]byte{}, rootPEM...), crlPEM...), // Dovecot's ssl_ca: CA then its CRL
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("pki: wrote root, server, client-ec, client-rsa (CN %s) and a CRL of %d entries to %s\n", user, revoked, dir)
	return nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}

func create(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// write stores name.crt (PEM) and name.key (PKCS#8 PEM, 0600).
func write(dir, name string, c *x509.Certificate, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// newCRL signs a CRL of n random serials. Its number is the time in nanoseconds, so a
// later CRL always replaces an earlier one at a front.
func newCRL(root *x509.Certificate, key crypto.Signer, n int, now time.Time) ([]byte, error) {
	entries := make([]x509.RevocationListEntry, n)
	for i := range entries {
		entries[i] = x509.RevocationListEntry{SerialNumber: serial(), RevocationTime: now.Add(-time.Minute)}
	}
	return signCRL(root, key, entries, now)
}

// signCRL signs a CRL of entries, numbered by the time as newCRL's are.
func signCRL(root *x509.Certificate, key crypto.Signer, entries []x509.RevocationListEntry, now time.Time) ([]byte, error) {
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(now.UnixNano()),
		ThisUpdate:                now.Add(-time.Minute),
		NextUpdate:                now.Add(7 * 24 * time.Hour),
		RevokedCertificateEntries: entries,
	}, root, key)
	if err != nil {
		return nil, fmt.Errorf("CRL: %w", err)
	}
	return der, nil
}

// crlOnlyFile writes a CRL of n entries, signed by the root in dir, to path; with
// resign, a CRL of the entries of that CRL file instead (the same bytes, in order).
func crlOnlyFile(dir, path string, n int, resign string) error {
	certPEM, err := os.ReadFile(filepath.Join(dir, "root.crt"))
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "root.key"))
	if err != nil {
		return err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return fmt.Errorf("no PEM root certificate and key in %s", dir)
	}
	root, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return err
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return err
	}
	var der []byte
	if resign != "" {
		der, err = resignCRL(root, k.(crypto.Signer), resign)
	} else {
		der, err = newCRL(root, k.(crypto.Signer), n, time.Now())
	}
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, der, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// resignCRL signs again the entries of the CRL file old, with a new number and dates.
func resignCRL(root *x509.Certificate, key crypto.Signer, old string) ([]byte, error) {
	b, err := os.ReadFile(old)
	if err != nil {
		return nil, err
	}
	prev, err := x509.ParseRevocationList(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", old, err)
	}
	// CreateRevocationList encodes the entries from their fields (it ignores Raw): for
	// these entries, a serial and a date each, the same bytes as prev's.
	entries := prev.RevokedCertificateEntries
	// One nanosecond on: the number stays above prev's even when both are signed within
	// the clock's resolution.
	now := time.Now()
	if prev.Number != nil && big.NewInt(now.UnixNano()).Cmp(prev.Number) <= 0 {
		now = time.Unix(0, prev.Number.Int64()+1)
	}
	return signCRL(root, key, entries, now)
}
