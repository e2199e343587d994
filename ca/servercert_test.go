package ca_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/ca"
	"github.com/imapgate/imapgate/caclient"
	"github.com/imapgate/imapgate/testenv"
)

func serverCSR(t testing.TB, cn string, dns []string, ips []net.IP, emails []string) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: cn}, DNSNames: dns, IPAddresses: ips, EmailAddresses: emails,
	}, ecKey(t))
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// checkServerProfile asserts what NSS, OpenSSL and Go demand of a TLS
// server certificate: CA:FALSE written out, serverAuth, digitalSignature.
func checkServerProfile(t *testing.T, leaf *x509.Certificate) {
	t.Helper()
	if !leaf.BasicConstraintsValid || leaf.IsCA {
		t.Errorf("basicConstraints valid=%v CA=%v, want CA:FALSE present", leaf.BasicConstraintsValid, leaf.IsCA)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("EKU %v, want serverAuth only", leaf.ExtKeyUsage)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage %v, want digitalSignature", leaf.KeyUsage)
	}
}

// nssVerifyServer builds an NSS database with the root trusted, adds the
// intermediate and the leaf, and asks certutil whether the leaf is a valid
// SSL server certificate (-u V).
func nssVerifyServer(t *testing.T, c *testenv.CA, leaf *x509.Certificate) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("certutil"); err != nil {
		t.Fatalf("certutil (libnss3-tools) is needed: apt-get install libnss3-tools (scripts/deps.sh installs it): %v", err)
	}
	dir := t.TempDir()
	db := "sql:" + dir
	run := func(args ...string) (string, error) {
		out, err := exec.Command("certutil", append(args, "-d", db)...).CombinedOutput()
		return string(out), err
	}
	if out, err := run("-N", "--empty-password"); err != nil {
		t.Fatalf("certutil -N: %v\n%s", err, out)
	}
	for _, a := range []struct {
		nick, trust string
		cert        *x509.Certificate
	}{{"root", "CT,C,C", c.Root}, {"inter", ",,", c.Intermediate}, {"leaf", ",,", leaf}} {
		f := writeFile(t, dir, a.nick+".pem", certPEM(a.cert))
		if out, err := run("-A", "-n", a.nick, "-t", a.trust, "-a", "-i", f); err != nil {
			t.Fatalf("certutil -A %s: %v\n%s", a.nick, err, out)
		}
	}
	return run("-V", "-n", "leaf", "-u", "V")
}

// TestServerCertificate: an admin gets a front's certificate through POST
// /api/v1/server; OpenSSL and NSS accept it as an SSL server certificate,
// it is listed and revocable; an agent may not ask for one; a CSR with a
// name the admin did not ask for is refused and nothing is stored.
func TestServerCertificate(t *testing.T) {
	c := testenv.StartCA(t)
	ctx := context.Background()
	admin := client(t, c, c.AdminCred)
	dns := []string{"mail.example.org", "imap.example.org"}
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	resp, err := admin.SignServer(ctx, caclient.ServerRequest{CSR: serverCSR(t, "mail.example.org", dns, ips, nil), DNS: dns, IP: ips})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Chain) != 2 || !bytes.Equal(resp.Chain[1].Raw, c.Intermediate.Raw) {
		t.Fatalf("chain: %d certificates, want leaf and intermediate", len(resp.Chain))
	}
	leaf := resp.Chain[0]
	checkServerProfile(t, leaf)
	if !slices.Equal(leaf.DNSNames, dns) || len(leaf.IPAddresses) != 2 || len(leaf.EmailAddresses)+len(leaf.URIs) > 0 {
		t.Errorf("names: DNS %v IP %v e-mail %v URI %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses, leaf.URIs)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life < 90*24*time.Hour || life > 90*24*time.Hour+2*time.Minute {
		t.Errorf("default lifetime %s, want 90 days", life)
	}
	dir := t.TempDir()
	leafFile := writeFile(t, dir, "leaf.pem", certPEM(leaf))
	interFile := writeFile(t, dir, "inter.pem", certPEM(c.Intermediate))
	if out, err := openssl(t, "verify", "-purpose", "sslserver", "-CAfile", c.RootsPEM, "-untrusted", interFile, leafFile); err != nil || !strings.Contains(out, ": OK") {
		t.Errorf("openssl verify -purpose sslserver: %v\n%s", err, out)
	}
	if out, err := nssVerifyServer(t, c, leaf); err != nil || !strings.Contains(out, "certificate is valid") {
		t.Errorf("certutil -V -u V: %v\n%s", err, out)
	}
	// Go's TLS client too, with the name and with the IP.
	pool := x509.NewCertPool()
	pool.AddCert(c.Root)
	inters := x509.NewCertPool()
	inters.AddCert(c.Intermediate)
	for _, name := range []string{"imap.example.org", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, Intermediates: inters}); err != nil {
			t.Errorf("Go verify for %s: %v", name, err)
		}
	}

	// A validity asked for; over the maximum is refused.
	short, err := admin.SignServer(ctx, caclient.ServerRequest{CSR: serverCSR(t, "", dns[:1], nil, nil), DNS: dns[:1], Validity: 48 * time.Hour})
	if err != nil || short.NotAfter.Sub(short.NotBefore) > 48*time.Hour+2*time.Minute {
		t.Fatalf("validity 48h: %v", err)
	}

	before, err := c.CA.List("")
	if err != nil {
		t.Fatal(err)
	}
	enroll := client(t, c, c.EnrollCred)
	var ae *caclient.Error
	if _, err := enroll.SignServer(ctx, caclient.ServerRequest{CSR: serverCSR(t, "", dns, nil, nil), DNS: dns}); !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Errorf("an enrollment agent asked for a server certificate: %v, want 403", err)
	}
	for _, tt := range []struct {
		name string
		req  caclient.ServerRequest
		want string
	}{
		{"a DNS name not asked for", caclient.ServerRequest{CSR: serverCSR(t, "", []string{"mail.example.org", "evil.example.com"}, nil, nil), DNS: dns[:1]}, "evil.example.com"},
		{"an IP not asked for", caclient.ServerRequest{CSR: serverCSR(t, "", dns[:1], []net.IP{net.ParseIP("10.0.0.1")}, nil), DNS: dns[:1]}, "10.0.0.1"},
		{"a requested name missing from the CSR", caclient.ServerRequest{CSR: serverCSR(t, "", dns[:1], nil, nil), DNS: dns}, "imap.example.org"},
		{"a CN not asked for", caclient.ServerRequest{CSR: serverCSR(t, "bank.example.com", dns[:1], nil, nil), DNS: dns[:1]}, "common name"},
		{"an e-mail SAN", caclient.ServerRequest{CSR: serverCSR(t, "", dns[:1], nil, []string{"alice@example.org"}), DNS: dns[:1]}, "e-mail"},
		{"no names", caclient.ServerRequest{CSR: serverCSR(t, "", nil, nil, nil)}, "no names"},
		{"not a host name", caclient.ServerRequest{CSR: serverCSR(t, "", []string{"mail example"}, nil, nil), DNS: []string{"mail example"}}, "host name"},
		{"too long", caclient.ServerRequest{CSR: serverCSR(t, "", dns[:1], nil, nil), DNS: dns[:1], Validity: 5 * 365 * 24 * time.Hour}, "max_server_validity"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := admin.SignServer(ctx, tt.req)
			if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || !strings.Contains(ae.Message, tt.want) {
				t.Fatalf("got %v, want 400 naming %q", err, tt.want)
			}
		})
	}
	after, err := c.CA.List("")
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("refused requests stored %d certificates", len(after)-len(before))
	}

	// Listed as a server certificate, and revocable like any other.
	var found *ca.CertStatus
	for i := range after {
		if after[i].Serial == resp.Serial {
			found = &after[i]
		}
	}
	if found == nil || found.Kind != ca.KindServer || !slices.Equal(found.DNSNames, dns) {
		t.Fatalf("the server certificate is not listed as one: %+v", found)
	}
	if _, err := admin.Revoke(ctx, resp.Serial, "superseded", "front moved"); err != nil {
		t.Fatal(err)
	}
	if _, ok := crlHas(fetchCRL(t, c), resp.Serial); !ok {
		t.Error("the revoked server certificate is not on the CRL")
	}
}

// TestServerCertificateInProcess: the function `imapgate serve` uses gives
// a usable tls.Certificate without HTTP, recorded like the others.
func TestServerCertificateInProcess(t *testing.T) {
	c := testenv.StartCA(t)
	cert, err := c.CA.ServerCertificate(context.Background(), []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, 0, ca.Requester{Subject: "imapgate serve"})
	if err != nil {
		t.Fatal(err)
	}
	checkServerProfile(t, cert.Leaf)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if conn, err := ln.Accept(); err == nil {
			conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	pool := x509.NewCertPool()
	pool.AddCert(c.Root)
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("a Go client with only the root refused the in-process certificate: %v", err)
	}
	conn.Close()
	list, _ := c.CA.List("")
	if !slices.ContainsFunc(list, func(s ca.CertStatus) bool {
		return s.Serial == ca.SerialHex(cert.Leaf.SerialNumber) && s.Kind == ca.KindServer
	}) {
		t.Error("the in-process server certificate is not recorded")
	}
}
