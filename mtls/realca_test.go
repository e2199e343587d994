package mtls_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/ca"
	"github.com/imapgate/imapgate/crl"
	"github.com/imapgate/imapgate/mtls"
	"github.com/imapgate/imapgate/testenv"
)

// TestWithRealCA is the whole chain: the real imapgate CA issues Alice's certificate,
// the front polls the CA's /crl over HTTP, Alice logs in to Dovecot through the front,
// the CA revokes her certificate and her live session ends with BYE.
func TestWithRealCA(t *testing.T) {
	authority := testenv.StartCA(t)
	dc := testenv.StartDovecot(t, testenv.DovecotOptions{})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: testenv.Alice.Name},
		EmailAddresses: []string{testenv.Alice.Name},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	iss, err := authority.CA.Sign(ctx, ca.SignRequest{CSR: csr, Identity: testenv.Alice.Name}, ca.Requester{Subject: "mtls test"})
	if err != nil {
		t.Fatalf("CA sign: %v", err)
	}
	if len(iss.Cert.EmailAddresses) != 1 || iss.Cert.EmailAddresses[0] != testenv.Alice.Name {
		t.Fatalf("CA issued e-mail SANs %v", iss.Cert.EmailAddresses)
	}

	store, err := crl.NewStore(crl.Options{URL: authority.PublicURL + "/crl", Issuer: authority.Intermediate, Interval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Refresh(ctx); err != nil {
		t.Fatalf("first CRL from the CA: %v", err)
	}
	pki := testenv.NewPKI(t) // only for the front's own server certificate
	roots := x509.NewCertPool()
	roots.AddCert(authority.Root)
	logs := &syncBuffer{}
	front, err := mtls.New(mtls.Options{
		Certificates: []tls.Certificate{pki.Server(t).TLSCertificate()},
		ClientRoots:  roots,
		CRLs:         []*crl.Store{store},
		Backend:      mtls.BackendOptions{Address: dc.Addr},
		Logger:       slog.New(slog.NewJSONHandler(logs, nil)),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	go front.Serve(rctx, ln, mtls.ImplicitTLS)
	go store.Run(rctx)
	t.Cleanup(func() {
		cancel()
		front.Close()
		if t.Failed() {
			t.Logf("front log:\n%s", logs)
		}
	})

	cert := tls.Certificate{PrivateKey: key, Leaf: iss.Cert}
	for _, c := range iss.Chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(),
		&tls.Config{RootCAs: pki.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	c := newLineConn(t, conn)
	c.line()
	c.send("82 authenticate PLAIN\r\n")
	c.until("+ ")
	c.send(plain("", testenv.Alice.Name, testenv.Alice.Password) + "\r\n")
	if got := c.line(); !loginOK.MatchString(got) {
		t.Fatalf("login with the CA's certificate: %q", got)
	}
	c.send("i IDLE\r\n")
	c.until("+ ")

	if _, err := authority.CA.Revoke(ctx, iss.Cert.SerialNumber, 1, "smartcard lost", ca.Requester{Subject: "mtls test"}); err != nil {
		t.Fatalf("CA revoke: %v", err)
	}
	lines := c.closed()
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "* BYE [ALERT] Your certificate has been revoked") {
		t.Fatalf("session after revocation at the CA: %q", lines)
	}
}
