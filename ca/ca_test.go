package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/ca"
	"github.com/imapgate/imapgate/caclient"
	"github.com/imapgate/imapgate/testenv"
)

func ecKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type csrOpts struct {
	cn     string
	emails []string
	dns    []string
	uris   []*url.URL
}

func csrPEM(t testing.TB, key crypto.Signer, o csrOpts) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: o.cn}, EmailAddresses: o.emails, DNSNames: o.dns, URIs: o.uris,
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func client(t testing.TB, c *testenv.CA, cred string) *caclient.Client {
	t.Helper()
	cl, err := caclient.New(c.URL, cred)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func openssl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("openssl", args...).CombinedOutput()
	return string(out), err
}

func writeFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func certPEM(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

func fetchCRL(t testing.TB, c *testenv.CA) *x509.RevocationList {
	t.Helper()
	resp, err := http.Get(c.PublicURL + "/crl")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	der, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("GET /crl: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("parse CRL: %v", err)
	}
	if err := crl.CheckSignatureFrom(c.Intermediate); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	return crl
}

func crlHas(crl *x509.RevocationList, serial string) (int, bool) {
	for _, e := range crl.RevokedCertificateEntries {
		if ca.SerialHex(e.SerialNumber) == serial {
			return e.ReasonCode, true
		}
	}
	return 0, false
}

// TestIssueProfileAndOpenSSLVerify: a CSR made by openssl (code nobody here
// wrote) is signed through the API and the result passes `openssl verify`.
func TestIssueProfileAndOpenSSLVerify(t *testing.T) {
	c := testenv.StartCA(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "alice.key")
	csrFile := filepath.Join(dir, "alice.csr")
	if out, err := openssl(t, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", keyFile, "-subj", "/CN=alice@example.org", "-addext", "subjectAltName=email:alice@example.org", "-out", csrFile); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	csr, _ := os.ReadFile(csrFile)
	resp, err := client(t, c, c.EnrollCred).Sign(context.Background(), caclient.SignRequest{CSR: csr, User: "alice@Example.ORG"})
	if err != nil {
		t.Fatal(err)
	}
	leaf := resp.Chain[0]
	if len(resp.Chain) != 2 || !bytes.Equal(resp.Chain[1].Raw, c.Intermediate.Raw) {
		t.Fatalf("chain = %d certs, want leaf + intermediate", len(resp.Chain))
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"SAN rfc822Name is the identity, domain lower-cased", len(leaf.EmailAddresses) == 1 && leaf.EmailAddresses[0] == "alice@example.org"},
		{"no other SANs", len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.URIs) == 0},
		{"EKU clientAuth only", len(leaf.ExtKeyUsage) == 1 && leaf.ExtKeyUsage[0] == x509.ExtKeyUsageClientAuth && len(leaf.UnknownExtKeyUsage) == 0},
		{"KeyUsage digitalSignature", leaf.KeyUsage == x509.KeyUsageDigitalSignature},
		{"not a CA", !leaf.IsCA},
		{"CRL DP", len(leaf.CRLDistributionPoints) == 1 && leaf.CRLDistributionPoints[0] == strings.TrimSuffix(c.CA.Config().CRLURL(), "")},
		{"AIA caIssuers", len(leaf.IssuingCertificateURL) == 1 && strings.HasSuffix(leaf.IssuingCertificateURL[0], "/intermediate.crt")},
		{"365 days", leaf.NotAfter.Sub(leaf.NotBefore) > 364*24*time.Hour && leaf.NotAfter.Sub(leaf.NotBefore) < 366*24*time.Hour},
		{"NotBefore in the past", leaf.NotBefore.Before(time.Now())},
		{"serial matches", ca.SerialHex(leaf.SerialNumber) == resp.Serial},
	}
	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("profile: %s: not so", ch.name)
		}
	}
	leafFile := writeFile(t, dir, "leaf.pem", certPEM(leaf))
	interFile := writeFile(t, dir, "inter.pem", certPEM(c.Intermediate))
	out, err := openssl(t, "verify", "-CAfile", c.RootsPEM, "-untrusted", interFile, "-purpose", "sslclient", leafFile)
	if err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	// AIA points at something that really is the intermediate.
	r, err := http.Get(leaf.IssuingCertificateURL[0])
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if !bytes.Equal(b, c.Intermediate.Raw) {
		t.Error("AIA caIssuers URL does not serve the intermediate (DER)")
	}
}

// TestRevokeCRLOpenSSL: a revocation reaches /crl at once, and OpenSSL-based
// relying parties accept the CRL and act on it.
func TestRevokeCRLOpenSSL(t *testing.T) {
	c := testenv.StartCA(t)
	ctx := context.Background()
	enroll, admin := client(t, c, c.EnrollCred), client(t, c, c.AdminCred)
	alice, err := enroll.Sign(ctx, caclient.SignRequest{CSR: csrPEM(t, ecKey(t), csrOpts{cn: "alice@example.org"}), User: "alice@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := enroll.Sign(ctx, caclient.SignRequest{CSR: csrPEM(t, ecKey(t), csrOpts{}), User: "bob@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	before := fetchCRL(t, c)
	rv, err := admin.Revoke(ctx, alice.Serial, "keyCompromise", "smartcard lost")
	if err != nil {
		t.Fatal(err)
	}
	crl := fetchCRL(t, c)
	if crl.Number.Cmp(before.Number) <= 0 || rv.CRLNumber != crl.Number.Int64() {
		t.Errorf("CRL number %v after revoke, %v before, API said %d: want strictly increasing", crl.Number, before.Number, rv.CRLNumber)
	}
	if code, ok := crlHas(crl, alice.Serial); !ok || code != 1 {
		t.Fatalf("CRL entry for %s: present=%v reason=%d, want keyCompromise(1)", alice.Serial, ok, code)
	}
	if _, ok := crlHas(crl, bob.Serial); ok {
		t.Fatal("bob is on the CRL but was not revoked")
	}
	if d := crl.NextUpdate.Sub(crl.ThisUpdate); d != 24*time.Hour {
		t.Errorf("nextUpdate - thisUpdate = %s, want 24h", d)
	}

	dir := t.TempDir()
	der := crl.Raw
	crlDER := writeFile(t, dir, "crl.der", der)
	crlPEM := writeFile(t, dir, "crl.pem", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
	chain := writeFile(t, dir, "chain.pem", certPEM(c.Root, c.Intermediate))
	if out, err := openssl(t, "crl", "-inform", "DER", "-in", crlDER, "-CAfile", chain, "-verify", "-noout"); err != nil || !strings.Contains(out, "verify OK") {
		t.Fatalf("openssl crl -verify: %v\n%s", err, out)
	}
	out, err := openssl(t, "verify", "-crl_check", "-CAfile", chain, "-CRLfile", crlPEM, writeFile(t, dir, "alice.pem", alice.ChainPEM[:bytes.Index(alice.ChainPEM, []byte("-----END CERTIFICATE-----"))+26]))
	if err == nil || !strings.Contains(out, "certificate revoked") {
		t.Fatalf("openssl verify -crl_check on the revoked cert: err=%v\n%s", err, out)
	}
	out, err = openssl(t, "verify", "-crl_check", "-CAfile", chain, "-CRLfile", crlPEM, writeFile(t, dir, "bob.pem", certPEM(bob.Chain[0])))
	if err != nil || !strings.Contains(out, ": OK") {
		t.Fatalf("openssl verify -crl_check on a good cert: %v\n%s", err, out)
	}

	// Revoking twice is a clear conflict; the CRL is unchanged in content.
	_, err = admin.Revoke(ctx, alice.Serial, "keyCompromise", "")
	var ae *caclient.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
		t.Errorf("second revoke: %v, want 409", err)
	}
	// Unknown serial: 404.
	if _, err = admin.Revoke(ctx, "0123456789ABCDEF", "keyCompromise", ""); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Errorf("revoke of an unknown serial: %v, want 404", err)
	}
	// The list shows the status and the reason.
	list, err := admin.List(ctx, "alice@example.org")
	if err != nil || len(list) != 1 || list[0].Status != "revoked" || list[0].ReasonCode != 1 {
		t.Errorf("list alice = %+v, %v; want one revoked cert", list, err)
	}
	if list[0].IssuedBy.Subject == "" || !strings.Contains(list[0].IssuedBy.Subject, "test help desk") {
		t.Errorf("issued_by = %q, want the enrollment agent", list[0].IssuedBy.Subject)
	}
	audit, err := c.CA.Audit(ca.AuditQuery{Serial: alice.Serial})
	if err != nil {
		t.Fatal(err)
	}
	var sawRevoke bool
	for _, ev := range audit {
		if ev.Action == "revoke" && ev.Serial == alice.Serial && ev.Result == "ok" && strings.Contains(ev.Actor, "first admin") && strings.Contains(ev.Reason, "smartcard lost") {
			sawRevoke = true
		}
	}
	if !sawRevoke {
		t.Errorf("audit trail has no revoke of %s by the admin: %+v", alice.Serial, audit)
	}
}

// TestCRLHTTPCaching: ETag, If-None-Match, Last-Modified, PEM form.
func TestCRLHTTPCaching(t *testing.T) {
	c := testenv.StartCA(t)
	resp, err := http.Get(c.PublicURL + "/crl")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	if etag == "" || resp.Header.Get("Last-Modified") == "" {
		t.Fatalf("headers %v: want ETag and Last-Modified", resp.Header)
	}
	req, _ := http.NewRequest("GET", c.PublicURL+"/crl", nil)
	req.Header.Set("If-None-Match", etag)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match with the current ETag: %s, want 304", resp.Status)
	}
	if err := c.CA.RegenerateCRL(); err != nil {
		t.Fatal(err)
	}
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") == etag {
		t.Fatalf("after re-signing: %s ETag %s, want 200 and a new ETag", resp.Status, resp.Header.Get("ETag"))
	}
	for _, p := range []string{"/crl.pem", "/roots.pem", "/intermediate.pem"} {
		resp, err := http.Get(c.PublicURL + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if blk, _ := pem.Decode(b); resp.StatusCode != 200 || blk == nil {
			t.Errorf("GET %s: %s, PEM=%v", p, resp.Status, blk != nil)
		}
	}
	// The API paths are not on the plain-HTTP listener.
	resp, err = http.Post(c.PublicURL+ca.PathSign, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 {
		t.Errorf("POST sign over plain HTTP: %s, want an error", resp.Status)
	}
}

// TestRestartKeepsEverything: stop the CA and start it again on the same directory.
func TestRestartKeepsEverything(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	c := testenv.StartCA(t, testenv.CAOptions{Dir: dir})
	ctx := context.Background()
	iss, err := client(t, c, c.EnrollCred).Sign(ctx, caclient.SignRequest{CSR: csrPEM(t, ecKey(t), csrOpts{}), User: "carol@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client(t, c, c.AdminCred).Revoke(ctx, iss.Serial, "superseded", ""); err != nil {
		t.Fatal(err)
	}
	n1 := fetchCRL(t, c).Number
	c.Stop()

	c2 := testenv.StartCA(t, testenv.CAOptions{Dir: dir})
	crl := fetchCRL(t, c2)
	if _, ok := crlHas(crl, iss.Serial); !ok {
		t.Fatal("after restart the CRL no longer lists the revoked certificate")
	}
	if crl.Number.Cmp(n1) <= 0 {
		t.Errorf("CRL number after restart %v, before %v: want strictly increasing", crl.Number, n1)
	}
	list, err := client(t, c2, c2.AdminCred).List(ctx, "carol@example.org")
	if err != nil || len(list) != 1 || list[0].Status != "revoked" {
		t.Fatalf("after restart list = %+v, %v", list, err)
	}
	if _, err := client(t, c2, c2.AdminCred).Revoke(ctx, iss.Serial, "superseded", ""); err == nil {
		t.Error("revoking again after restart succeeded; the revocation was lost")
	}
}

// TestConcurrentIssuance: 100 issuances at once give 100 distinct serials, all stored.
func TestConcurrentIssuance(t *testing.T) {
	c := testenv.StartCA(t)
	cl := client(t, c, c.EnrollCred)
	const n = 100
	key := ecKey(t)
	csr := csrPEM(t, key, csrOpts{})
	serials := make(chan string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := cl.Sign(context.Background(), caclient.SignRequest{CSR: csr, User: "dave@example.org"})
			if err != nil {
				errs <- err
				return
			}
			serials <- r.Serial
		}()
	}
	wg.Wait()
	close(serials)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for s := range serials {
		if seen[s] {
			t.Fatalf("serial %s issued twice", s)
		}
		seen[s] = true
	}
	if len(seen) != n {
		t.Fatalf("%d serials, want %d", len(seen), n)
	}
	list, err := client(t, c, c.AdminCred).List(context.Background(), "dave@example.org")
	if err != nil || len(list) != n {
		t.Fatalf("stored %d records (%v), want %d", len(list), err, n)
	}
}

// rawClient makes an HTTPS client with an arbitrary client certificate (or none).
func rawClient(t testing.TB, c *testenv.CA, cert *tls.Certificate) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(c.Root)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
}

func post(t testing.TB, hc *http.Client, u string, body io.Reader) (int, string) {
	t.Helper()
	resp, err := hc.Post(u, "application/json", body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e ca.ErrorJSON
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
			t.Errorf("%s: error body is not {\"error\": …}: %s", u, b)
		}
	}
	return resp.StatusCode, string(b)
}

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}

// TestRoles: the API authorizes by the role in the client certificate.
func TestRoles(t *testing.T) {
	c := testenv.StartCA(t)
	ctx := context.Background()
	admin := client(t, c, c.AdminCred)
	// A user certificate of this very CA, with its key, as a smartcard holder would have.
	userKey := ecKey(t)
	u, err := client(t, c, c.EnrollCred).Sign(ctx, caclient.SignRequest{CSR: csrPEM(t, userKey, csrOpts{}), User: "erin@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	userCert := &tls.Certificate{Certificate: [][]byte{u.Chain[0].Raw, u.Chain[1].Raw}, PrivateKey: userKey}
	// A second admin, then revoked: it must lose access at once.
	revDir := filepath.Join(t.TempDir(), "revoked-admin")
	revIss, err := c.CA.IssueCredential(ctx, ca.RoleAdmin, "old admin", revDir, ca.Requester{Subject: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Revoke(ctx, ca.SerialHex(revIss.Cert.SerialNumber), "privilegeWithdrawn", ""); err != nil {
		t.Fatal(err)
	}
	load := func(dir string) *tls.Certificate {
		cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		return &cert
	}
	sign := func() io.Reader {
		return jsonBody(ca.SignRequestJSON{CSR: string(csrPEM(t, ecKey(t), csrOpts{})), User: "frank@example.org"})
	}
	agent := func() io.Reader {
		return jsonBody(ca.AgentRequestJSON{Role: "enroll", Name: "pc-2", CSR: string(csrPEM(t, ecKey(t), csrOpts{cn: "pc-2"}))})
	}
	revoke := func() io.Reader { return jsonBody(ca.RevokeRequestJSON{Serial: u.Serial, Reason: "keyCompromise"}) }
	tests := []struct {
		name string
		cert *tls.Certificate
		path string
		body func() io.Reader
		want int
	}{
		{"no certificate: sign", nil, ca.PathSign, sign, 401},
		{"no certificate: revoke", nil, ca.PathRevoke, revoke, 401},
		{"user certificate: sign", userCert, ca.PathSign, sign, 403},
		{"user certificate: revoke", userCert, ca.PathRevoke, revoke, 403},
		{"enroll agent: agents", load(c.EnrollCred), ca.PathAgents, agent, 403},
		{"enroll agent: revoke", load(c.EnrollCred), ca.PathRevoke, revoke, 403},
		{"revoked admin: sign", load(revDir), ca.PathSign, sign, 403},
		{"enroll agent: sign", load(c.EnrollCred), ca.PathSign, sign, 201},
		{"admin: sign", load(c.AdminCred), ca.PathSign, sign, 201},
		{"admin: agents", load(c.AdminCred), ca.PathAgents, agent, 201},
		{"admin: revoke", load(c.AdminCred), ca.PathRevoke, revoke, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := post(t, rawClient(t, c, tt.cert), c.URL+tt.path, tt.body())
			if code != tt.want {
				t.Fatalf("status %d, want %d: %s", code, tt.want, body)
			}
		})
	}
	// GET certs: no cert 401, user 403, enroll and admin 200.
	for _, tt := range []struct {
		cert *tls.Certificate
		want int
	}{{nil, 401}, {userCert, 403}, {load(c.EnrollCred), 200}, {load(c.AdminCred), 200}} {
		resp, err := rawClient(t, c, tt.cert).Get(c.URL + ca.PathCerts)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("GET certs: %d, want %d", resp.StatusCode, tt.want)
		}
	}
	// A certificate from another CA is either refused at the handshake or (as Go's
	// client does, since the CA is not among the acceptable issuers) not sent: 401.
	other := testenv.NewPKI(t).Issue(t, testenv.LeafOptions{Emails: []string{"root@example.org"}})
	oc := other.TLSCertificate()
	if resp, err := rawClient(t, c, &oc).Post(c.URL+ca.PathSign, "application/json", sign()); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("a client certificate of another CA: %s, want 401", resp.Status)
		}
	}
}

// TestBadCSRs: each gets 400 with a message, and nothing is stored.
func TestBadCSRs(t *testing.T) {
	c := testenv.StartCA(t)
	hc := rawClient(t, c, func() *tls.Certificate {
		cert, err := tls.LoadX509KeyPair(filepath.Join(c.EnrollCred, "cert.pem"), filepath.Join(c.EnrollCred, "key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		return &cert
	}())
	good := csrPEM(t, ecKey(t), csrOpts{cn: "gina@example.org", emails: []string{"gina@example.org"}})
	tampered := func() []byte {
		blk, _ := pem.Decode(good)
		der := bytes.Clone(blk.Bytes)
		i := bytes.Index(der, []byte("gina"))
		der[i] = 'h' // the CN now says hina; the signature no longer matches
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}()
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	tests := []struct {
		name string
		body []byte
		want string // in the error message
	}{
		{"bad signature", mustJSON(ca.SignRequestJSON{CSR: string(tampered), User: "hina@example.org"}), "signature"},
		{"rsa 1024", mustJSON(ca.SignRequestJSON{CSR: string(csrPEM(t, rsa1024, csrOpts{})), User: "gina@example.org"}), "1024"},
		{"ed25519", mustJSON(ca.SignRequestJSON{CSR: string(csrPEM(t, edKey, csrOpts{})), User: "gina@example.org"}), "not accepted"},
		{"p224", mustJSON(ca.SignRequestJSON{CSR: string(csrPEM(t, p224, csrOpts{})), User: "gina@example.org"}), "P-224"},
		{"mismatched email SAN", mustJSON(ca.SignRequestJSON{CSR: string(csrPEM(t, ecKey(t), csrOpts{emails: []string{"mallory@evil.test"}})), User: "gina@example.org"}), "mallory"},
		{"mismatched CN", mustJSON(ca.SignRequestJSON{CSR: string(csrPEM(t, ecKey(t), csrOpts{cn: "root"})), User: "gina@example.org"}), "common name"},
		{"DNS SAN", mustJSON(ca.SignRequestJSON{CSR: string(csrPEM(t, ecKey(t), csrOpts{dns: []string{"mail.example.org"}})), User: "gina@example.org"}), "DNS"},
		{"URI SAN posing as a role", mustJSON(ca.SignRequestJSON{CSR: string(csrPEM(t, ecKey(t), csrOpts{uris: []*url.URL{ca.RoleAdmin.URI()}})), User: "gina@example.org"}), "URI"},
		{"user not an address", mustJSON(ca.SignRequestJSON{CSR: string(good), User: "gina"}), "e-mail"},
		{"user with display name", mustJSON(ca.SignRequestJSON{CSR: string(good), User: "Gina <gina@example.org>"}), "e-mail"},
		{"no user", mustJSON(ca.SignRequestJSON{CSR: string(good)}), "no user"},
		{"garbage CSR", mustJSON(ca.SignRequestJSON{CSR: "\x00\x01garbage", User: "gina@example.org"}), "CSR"},
		{"wrong PEM type", mustJSON(ca.SignRequestJSON{CSR: string(certPEM(c.Root)), User: "gina@example.org"}), "CERTIFICATE REQUEST"},
		{"validity too long", mustJSON(ca.SignRequestJSON{CSR: string(good), User: "gina@example.org", ValidityDays: 3650}), "validity"},
		{"garbage body", []byte("\xff\xfe not json"), "JSON"},
		{"unknown field", []byte(`{"csr":"x","user":"gina@example.org","admin":true}`), "JSON"},
		{"empty body", nil, "empty"},
		{"10 MB body", append(append([]byte(`{"csr":"`), bytes.Repeat([]byte("A"), 10<<20)...), []byte(`","user":"gina@example.org"}`)...), "larger"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := post(t, hc, c.URL+ca.PathSign, bytes.NewReader(tt.body))
			if code != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", code, body)
			}
			if !strings.Contains(body, tt.want) {
				t.Errorf("error %s does not mention %q", body, tt.want)
			}
		})
	}
	list, err := c.CA.List("")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range list {
		if r.Kind == ca.KindUser {
			t.Errorf("a user certificate was stored after bad requests: %+v", r)
		}
	}
	// And the good one goes through, so the 400s were not a broken endpoint.
	if code, body := post(t, hc, c.URL+ca.PathSign, bytes.NewReader(mustJSON(ca.SignRequestJSON{CSR: string(good), User: "gina@example.org"}))); code != 201 {
		t.Fatalf("good CSR: %d %s", code, body)
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// TestKeyTypesAccepted: every key type a token makes is signed.
func TestKeyTypesAccepted(t *testing.T) {
	c := testenv.StartCA(t)
	cl := client(t, c, c.EnrollCred)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	r2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	r3072, _ := rsa.GenerateKey(rand.Reader, 3072)
	for name, k := range map[string]crypto.Signer{"p256": ecKey(t), "p384": p384, "rsa2048": r2048, "rsa3072": r3072} {
		if _, err := cl.Sign(context.Background(), caclient.SignRequest{CSR: csrPEM(t, k, csrOpts{}), User: "key@example.org"}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestInitRefusesOverwrite and key-file modes.
func TestInitRefusesOverwriteAndKeyModes(t *testing.T) {
	c := testenv.StartCA(t)
	for _, f := range []string{ca.RootKeyFile, ca.IntermediateKeyFile, ca.TLSKeyFile, ca.DBFile, ca.ConfigFile, "admin/key.pem", "enroll-cred/key.pem"} {
		fi, err := os.Stat(filepath.Join(c.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	// The key files are encrypted: no plain PEM private key in them.
	for _, f := range []string{ca.RootKeyFile, ca.IntermediateKeyFile} {
		b, _ := os.ReadFile(filepath.Join(c.Dir, f))
		if !bytes.Contains(b, []byte("ENCRYPTED")) {
			t.Errorf("%s is not encrypted", f)
		}
	}
	before, _ := os.ReadFile(filepath.Join(c.Dir, ca.RootCertFile))
	t.Setenv(ca.PasswordEnv, "another-password")
	_, err := ca.Init(context.Background(), ca.InitOptions{Dir: c.Dir, Name: "x", URL: "https://127.0.0.1:1"})
	if err == nil || !strings.Contains(err.Error(), "already holds a CA") {
		t.Fatalf("init over an existing CA: %v", err)
	}
	after, _ := os.ReadFile(filepath.Join(c.Dir, ca.RootCertFile))
	if !bytes.Equal(before, after) {
		t.Fatal("init touched an existing CA")
	}
	// A wrong password is a clear error.
	cfg, err := ca.LoadConfig(c.Dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Keys.PasswordFile = ""
	if _, err := ca.Open(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "password") {
		t.Fatalf("open with a wrong password: %v", err)
	}
}

// TestCRLRenewedOnSchedule: without any revocation the CRL is re-signed every
// crl.renew_period, so relying parties never see it reach nextUpdate.
func TestCRLRenewedOnSchedule(t *testing.T) {
	c := testenv.StartCA(t, testenv.CAOptions{Configure: func(cfg *ca.Config) {
		cfg.CRL.RenewPeriod = ca.Duration{Duration: 300 * time.Millisecond}
	}})
	first := fetchCRL(t, c)
	deadline := time.Now().Add(20 * time.Second)
	for {
		crl := fetchCRL(t, c)
		if crl.Number.Cmp(first.Number) > 0 {
			if !crl.ThisUpdate.Before(crl.NextUpdate) {
				t.Fatalf("renewed CRL thisUpdate %v not before nextUpdate %v", crl.ThisUpdate, crl.NextUpdate)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("CRL number still %v after 20s with renew_period 300ms", crl.Number)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBboltSingleProcess: a second opener of the same bbolt CA gets a message
// that says what is going on, not a bare "timeout".
func TestBboltSingleProcess(t *testing.T) {
	c := testenv.StartCA(t)
	cfg, err := ca.LoadConfig(c.Dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(ca.PasswordEnv, c.Password)
	cfg.Keys.PasswordFile = ""
	_, err = ca.Open(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second open of a bbolt CA: %v", err)
	}
}

// TestAPITLSPolicy: TLS 1.0 and 1.1 are refused; 1.2 and 1.3 work.
func TestAPITLSPolicy(t *testing.T) {
	c := testenv.StartCA(t)
	pool := x509.NewCertPool()
	pool.AddCert(c.Root)
	host := strings.TrimPrefix(c.URL, "https://")
	for _, tt := range []struct {
		v  uint16
		ok bool
	}{{tls.VersionTLS10, false}, {tls.VersionTLS11, false}, {tls.VersionTLS12, true}, {tls.VersionTLS13, true}} {
		conn, err := tls.Dial("tcp", host, &tls.Config{RootCAs: pool, MinVersion: tt.v, MaxVersion: tt.v})
		if err == nil {
			conn.Close()
		}
		if (err == nil) != tt.ok {
			t.Errorf("TLS version %x: err=%v, want ok=%v", tt.v, err, tt.ok)
		}
	}
}
