package mtls_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/ca"
	"github.com/imapgate/imapgate/mtls"
	"github.com/imapgate/imapgate/testenv"
)

// TestWithRealCA is the whole chain: the real imapgate CA issues Alice's certificate,
// the front (built from its YAML config) polls the CA's CRL — over plain HTTP at the
// public URL, or over HTTPS at the API with crl[].ca_file — Alice logs in to Dovecot
// through the front, the CA revokes her certificate and her live session ends with BYE.
func TestWithRealCA(t *testing.T) {
	authority := testenv.StartCA(t)
	dc := testenv.StartDovecot(t, testenv.DovecotOptions{})
	for _, tc := range []struct {
		name string
		crl  string // YAML of the crl entry, after issuer_file
	}{
		{"http_public_url", "url: " + authority.PublicURL + "/crl"},
		{"https_api_with_ca_file", "url: " + authority.URL + "/crl\n    ca_file: " + authority.RootsPEM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.HasPrefix(authority.URL, "https://") {
				t.Fatalf("CA API URL %q is not https", authority.URL)
			}
			testWithRealCA(t, authority, dc, tc.crl)
		})
	}
}

func testWithRealCA(t *testing.T, authority *testenv.CA, dc *testenv.Dovecot, crlYAML string) {
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

	pki := testenv.NewPKI(t) // only for the front's own server certificate
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	o := realCAOptions(t, authority, pki, dc, crlYAML, logger)
	store := o.CRLs[0]
	if _, err := store.Refresh(ctx); err != nil {
		t.Fatalf("first CRL from the CA: %v", err)
	}
	front, err := mtls.New(o, nil)
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
	// The revoking CRL came from the configured source (https: through ca_file).
	if want := `"msg":"crl loaded","source":"` + strings.Fields(crlYAML)[1] + `"`; !strings.Contains(logs.String(), want) {
		t.Errorf("log lacks %s", want)
	}
}

// realCAOptions builds the front's options from YAML the way `imapgate front --config`
// does, with the real CA's root as client CA, its intermediate as CRL issuer and the
// given crl entry (polled every 200ms). The CRL state file is the test's own: the
// default, /var/lib/imapgate, is the machine's, and Options (unlike Run) does not make
// its directory.
func realCAOptions(t *testing.T, authority *testenv.CA, pki *testenv.PKI, dc *testenv.Dovecot, crlYAML string, logger *slog.Logger) mtls.Options {
	t.Helper()
	dir := t.TempDir()
	srvCert, srvKey := pki.Server(t).WriteFiles(t, dir, "front")
	issuer := filepath.Join(dir, "intermediate.pem")
	testenv.WriteFile(t, issuer, testenv.CertPEM(authority.Intermediate))
	cfg, err := mtls.ParseConfig([]byte(fmt.Sprintf(`tls:
  cert_file: %s
  key_file: %s
  client_ca_file: %s
crl:
  - issuer_file: %s
    interval: 200ms
    %s
backend:
  address: %s
crl_state_file: %s
`, srvCert, srvKey, authority.RootsPEM, issuer, crlYAML, dc.Addr, filepath.Join(dir, "crl-state.json"))))
	if err != nil {
		t.Fatal(err)
	}
	o, err := cfg.Options(logger)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestCRLOverHTTPSNeedsCAFile: the CA's HTTPS API has a certificate from the CA's own
// root, so without crl[].ca_file (system roots) the front cannot fetch the CRL, and
// says why; it does not fall back to skipping verification.
func TestCRLOverHTTPSNeedsCAFile(t *testing.T) {
	authority := testenv.StartCA(t)
	dc := &testenv.Dovecot{Addr: "127.0.0.1:143"} // never dialled
	o := realCAOptions(t, authority, testenv.NewPKI(t), dc, "url: "+authority.URL+"/crl", slog.New(slog.DiscardHandler))
	_, err := o.CRLs[0].Refresh(context.Background())
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("CRL over https without ca_file: %v, want a certificate verification error", err)
	}
}
