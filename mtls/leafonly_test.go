package mtls_test

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"
)

// TestLeafOnlyClient: a client may send its leaf alone (a smartcard that holds only
// the user's certificate, offered because the CertificateRequest names its issuer; see
// TestCertificateRequestNamesCA). The CA that signs the CRL is the issuer of user
// certificates, so the front builds the chain through it without a
// client_intermediates_file.
func TestLeafOnlyClient(t *testing.T) {
	e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1"}) // no login in this test
	c := e.alice.TLSCertificate()
	c.Certificate = c.Certificate[:1]
	cfg := e.clientTLS(nil)
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", e.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := newLineConn(t, conn)
	if g := l.line(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("leaf-only client greeted with %q, want * OK", g)
	}
}
