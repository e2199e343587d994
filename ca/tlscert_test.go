package ca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// writeShortTLSCert replaces the CA's tls.crt and tls_key.pem with a pair for
// 127.0.0.1 that expires after life.
func writeShortTLSCert(t *testing.T, c *CA, now time.Time, life time.Duration) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(life),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, c.inter, key.Public(), c.interKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	kb, _ := x509.MarshalECPrivateKey(key)
	if err := os.WriteFile(c.cfg.path(TLSKeyFile), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.cfg.path(TLSCertFile), encodeCerts(leaf, c.inter), 0o644); err != nil {
		t.Fatal(err)
	}
	return leaf
}

// TestTLSCertRenewedWhileServing: ca serve runs for weeks; its own HTTPS
// certificate must be renewed, on disk too, once under 30 days are left —
// not only when the process happens to restart.
func TestTLSCertRenewedWhileServing(t *testing.T) {
	var skew atomic.Int64 // the CA's clock runs this far ahead
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	c := openTestCA(t, nil, func(c *CA) { c.now = clock })
	short := writeShortTLSCert(t, c, clock(), 40*24*time.Hour)
	shortPEM, _ := os.ReadFile(c.cfg.path(TLSCertFile))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- NewServer(c).Serve(ctx, ln, nil) }()
	t.Cleanup(func() { cancel(); <-served })

	pool := x509.NewCertPool()
	pool.AddCert(c.root)
	served1 := func() *x509.Certificate {
		t.Helper()
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Time: clock})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	if got := served1(); !got.Equal(short) {
		t.Fatalf("with 40 days left the CA serves %v, want the certificate on disk", got.SerialNumber)
	}

	skew.Store(int64(15 * 24 * time.Hour)) // 25 days left
	var renewed *x509.Certificate
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if got := served1(); !got.Equal(short) {
			renewed = got
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("with 25 days left the CA still serves the old certificate after 5s")
		}
	}
	if left := renewed.NotAfter.Sub(clock()); left < 300*24*time.Hour {
		t.Errorf("renewed certificate has %v left, want about a year", left)
	}
	if len(renewed.IPAddresses) != 1 || !renewed.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("renewed certificate names %v, want 127.0.0.1 as before", renewed.IPAddresses)
	}

	// Saved: the pair on disk is the renewed one, the key 0600, nothing left over.
	pair, err := tls.LoadX509KeyPair(c.cfg.path(TLSCertFile), c.cfg.path(TLSKeyFile))
	if err != nil {
		t.Fatalf("the pair on disk: %v", err)
	}
	if !bytes.Equal(pair.Certificate[0], renewed.Raw) {
		t.Error("tls.crt on disk is not the renewed certificate")
	}
	if fi, err := os.Stat(c.cfg.path(TLSKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("tls_key.pem: %v %v, want mode 0600", fi.Mode(), err)
	}
	for _, f := range []string{TLSCertFile + ".new", TLSKeyFile + ".new"} {
		if _, err := os.Stat(c.cfg.path(f)); err == nil {
			t.Errorf("%s left behind", f)
		}
	}

	// A renewal stopped between its two renames: the new key is in place, the
	// old tls.crt still beside it, the new one in tls.crt.new. The next start
	// installs it instead of failing on a mismatched pair.
	if err := os.Rename(c.cfg.path(TLSCertFile), c.cfg.path(TLSCertFile+".new")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.cfg.path(TLSCertFile), shortPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewServer(c).TLSConfig(); err != nil {
		t.Fatalf("start after an interrupted renewal: %v", err)
	}
	if pair, err := tls.LoadX509KeyPair(c.cfg.path(TLSCertFile), c.cfg.path(TLSKeyFile)); err != nil || !bytes.Equal(pair.Certificate[0], renewed.Raw) {
		t.Errorf("after an interrupted renewal: %v; want the renewed pair installed", err)
	}
}
