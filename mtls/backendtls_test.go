package mtls_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/mtls"
	"github.com/imapgate/imapgate/testenv"
)

// TestBackendTLS: the front speaks TLS to a real Dovecot (ssl = required, certificate
// from its own test CA), implicit and with STARTTLS, configured through the YAML keys.
// A good configuration logs in and fetches; a backend certificate the front cannot
// verify gives the user a prompt NO [UNAVAILABLE] and the log says why.
func TestBackendTLS(t *testing.T) {
	backendPKI := testenv.NewPKI(t) // issues Dovecot's certificate
	otherPKI := testenv.NewPKI(t)   // a CA the backend does not use
	implicit := testenv.StartDovecot(t, testenv.DovecotOptions{TLSCert: backendPKI.Server(t), ImplicitTLS: true})
	starttls := testenv.StartDovecot(t, testenv.DovecotOptions{TLSCert: backendPKI.Server(t)})
	dir := t.TempDir()
	goodCA := filepath.Join(dir, "backend-ca.pem")
	otherCA := filepath.Join(dir, "other-ca.pem")
	testenv.WriteFile(t, goodCA, testenv.CertPEM(backendPKI.Root))
	testenv.WriteFile(t, otherCA, testenv.CertPEM(otherPKI.Root))

	for _, tc := range []struct {
		name    string
		dovecot *testenv.Dovecot
		backend string // YAML under backend:, after address
		why     string // "": login works; else the log's reason contains it
	}{
		{"good_implicit", implicit, "tls: implicit\n  ca_file: " + goodCA, ""},
		{"good_starttls", starttls, "tls: starttls\n  ca_file: " + goodCA, ""},
		{"good_server_name", implicit, "tls: implicit\n  ca_file: " + goodCA + "\n  server_name: localhost", ""},
		{"fail_implicit_other_ca", implicit, "tls: implicit\n  ca_file: " + otherCA, "certificate signed by unknown authority"},
		{"fail_starttls_other_ca", starttls, "tls: starttls\n  ca_file: " + otherCA, "certificate signed by unknown authority"},
		{"fail_system_roots", implicit, "tls: implicit", "certificate signed by unknown authority"},
		{"fail_server_name", implicit, "tls: implicit\n  ca_file: " + goodCA + "\n  server_name: mail.example.org", "not mail.example.org"},
		{"fail_implicit_on_starttls_port", starttls, "tls: implicit\n  ca_file: " + goodCA, "does not look like a TLS handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backend := backendFromYAML(t, "address: "+tc.dovecot.Addr+"\n  "+tc.backend)
			e := newEnv(t, envOptions{dovecot: tc.dovecot, mod: func(o *mtls.Options) { o.Backend = backend }})
			c := e.dial(t, e.alice)
			c.line()
			start := time.Now()
			c.send("a LOGIN alice@example.org alice-secret\r\n")
			got := c.line()
			if tc.why != "" {
				if !strings.HasPrefix(got, "a NO [UNAVAILABLE] The mail server is not available") {
					t.Fatalf("login: %q, want NO [UNAVAILABLE]", got)
				}
				if d := time.Since(start); d > 10*time.Second {
					t.Errorf("the refusal took %v", d)
				}
				waitFor(t, e.logs, `"result":"backend_error"`)
				if logs := e.logs.String(); !strings.Contains(logs, tc.why) || !strings.Contains(logs, "check backend.tls, backend.ca_file and backend.server_name") {
					t.Errorf("log does not say why (%q):\n%s", tc.why, logs)
				}
				// The session goes on: the user can try again or log out.
				c.send("b LOGOUT\r\n")
				c.until("b OK")
				return
			}
			if !loginOK.MatchString(got) {
				t.Fatalf("login through TLS: %q", got)
			}
			c.send("b SELECT INBOX\r\n")
			c.until("b OK")
			c.send("c FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
			if s := c.until("Subject:"); s != "Subject: test message 1" {
				t.Fatalf("fetched %q", s)
			}
			c.until("c OK")
			c.send("d LOGOUT\r\n")
			c.closed()
			// Dovecot logs the session id the front forwarded, and TLS for this login.
			m := regexp.MustCompile(`"session":"([^"]+)"`).FindStringSubmatch(e.logs.String())
			if m == nil {
				t.Fatalf("no session id in the front's log:\n%s", e.logs)
			}
			tc.dovecot.WaitLog(t, "Login: user=<alice@example.org>", ", TLS", "session=<"+m[1]+">")
		})
	}
}

// backendFromYAML builds the backend options from a backend: section the way
// `imapgate front --config` does (Config.Options, with throwaway files for the rest).
func backendFromYAML(t *testing.T, backend string) mtls.BackendOptions {
	t.Helper()
	pki := testenv.NewPKI(t)
	dir := t.TempDir()
	cert, key := pki.Server(t).WriteFiles(t, dir, "front")
	testenv.WriteFile(t, filepath.Join(dir, "roots.pem"), testenv.CertPEM(pki.Root))
	testenv.WriteFile(t, filepath.Join(dir, "inter.pem"), testenv.CertPEM(pki.Intermediate))
	testenv.WriteFile(t, filepath.Join(dir, "ca.crl"), pki.CRL(t, testenv.CRLOptions{}))
	conf := fmt.Sprintf("tls:\n  cert_file: %s\n  key_file: %s\n  client_ca_file: %s/roots.pem\ncrl:\n  - file: %s/ca.crl\n    issuer_file: %s/inter.pem\nbackend:\n  %s\n",
		cert, key, dir, dir, dir, backend)
	cfg, err := mtls.ParseConfig([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	o, err := cfg.Options(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return o.Backend
}

// TestBackendSTARTTLSRefused: a backend that refuses STARTTLS, or sends bytes after its
// OK before the handshake (which anyone on the path could have injected), gets no
// login; the user sees NO [UNAVAILABLE]. A stub backend, since Dovecot does neither.
func TestBackendSTARTTLSRefused(t *testing.T) {
	for _, tc := range []struct{ name, answer, why string }{
		{"refused", "g0 BAD STARTTLS not available\r\n", "refused STARTTLS"},
		{"injected", "g0 OK Begin TLS\r\ng1 OK [CAPABILITY IMAP4rev1] injected\r\n", "sent data after its STARTTLS OK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := serveStub(t, localListen(t), func(c net.Conn) {
				c.SetDeadline(time.Now().Add(30 * time.Second))
				io.WriteString(c, "* OK [CAPABILITY IMAP4rev1 STARTTLS] stub ready\r\n")
				if line, err := bufio.NewReader(c).ReadString('\n'); err == nil && strings.HasPrefix(line, "g0 STARTTLS") {
					io.WriteString(c, tc.answer)
				}
				io.Copy(io.Discard, c)
			})
			e := newEnv(t, envOptions{backendAddr: ln.Addr().String(), mod: func(o *mtls.Options) {
				o.Backend.TLS = mtls.BackendStartTLS
				o.Backend.TLSConfig = nil // system roots: the stub never gets that far
			}})
			c := e.dial(t, e.alice)
			c.line()
			c.send("a LOGIN alice@example.org alice-secret\r\n")
			if got := c.line(); !strings.HasPrefix(got, "a NO [UNAVAILABLE]") {
				t.Fatalf("login: %q", got)
			}
			waitFor(t, e.logs, tc.why)
		})
	}
}

// TestBackendClientCertificate: with backend.cert_file and key_file the front presents
// its own certificate to a backend that requires one; without, the backend refuses the
// handshake and the user gets NO [UNAVAILABLE]. A Go stub backend stands in for Dovecot
// with ssl_verify_client_cert, so that the test sees exactly which certificate arrived.
func TestBackendClientCertificate(t *testing.T) {
	backendPKI := testenv.NewPKI(t)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "backend-ca.pem")
	testenv.WriteFile(t, caFile, testenv.CertPEM(backendPKI.Root))
	frontCert, frontKey := backendPKI.Issue(t, testenv.LeafOptions{CommonName: "front.example.org"}).WriteFiles(t, dir, "front-client")
	presented := make(chan string, 10)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{backendPKI.Server(t).TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    backendPKI.Pool(),
		MinVersion:   tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go stubIMAP(c.(*tls.Conn), presented)
		}
	}()
	for _, tc := range []struct {
		name, backend, want, cn string
	}{
		{"good_with_cert", "\n  cert_file: " + frontCert + "\n  key_file: " + frontKey, "a OK [CAPABILITY IMAP4rev1] Logged in", "front.example.org"},
		{"fail_without_cert", "", "a NO [UNAVAILABLE]", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backend := backendFromYAML(t, "address: "+ln.Addr().String()+"\n  tls: implicit\n  ca_file: "+caFile+tc.backend)
			e := newEnv(t, envOptions{backendAddr: ln.Addr().String(), mod: func(o *mtls.Options) { o.Backend = backend }})
			c := e.dial(t, e.alice)
			c.line()
			c.send("a LOGIN alice@example.org alice-secret\r\n")
			if got := c.line(); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("login: %q, want %q", got, tc.want)
			}
			if tc.cn != "" {
				if got := <-presented; got != tc.cn {
					t.Errorf("backend saw client certificate %q, want %q", got, tc.cn)
				}
			} else {
				waitFor(t, e.logs, `"result":"backend_error"`)
			}
		})
	}
}

// stubIMAP is a minimal IMAP server for the front's backend login: greeting, ID, LOGIN
// (any password), then it reads until the connection ends. It reports the common name
// of the client certificate once the handshake is done.
func stubIMAP(c *tls.Conn, presented chan<- string) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := c.Handshake(); err != nil {
		return
	}
	if pc := c.ConnectionState().PeerCertificates; len(pc) > 0 {
		presented <- pc[0].Subject.CommonName
	}
	io.WriteString(c, "* OK [CAPABILITY IMAP4rev1] stub ready\r\n")
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		tag, rest, _ := strings.Cut(line, " ")
		switch cmd, _, _ := strings.Cut(strings.TrimSpace(rest), " "); strings.ToUpper(cmd) {
		case "LOGIN":
			io.WriteString(c, tag+" OK [CAPABILITY IMAP4rev1] Logged in\r\n")
		case "LOGOUT":
			io.WriteString(c, "* BYE\r\n"+tag+" OK\r\n")
			return
		default:
			io.WriteString(c, tag+" OK\r\n")
		}
	}
}

// TestBackendClientCertificateDovecot: a real Dovecot that accepts logins only
// over TLS with a client certificate of its own CA (a backend that trusts the
// front alone): the front's backend.cert_file gets alice in, without it the
// login is refused.
func TestBackendClientCertificateDovecot(t *testing.T) {
	backendPKI := testenv.NewPKI(t)
	dc := testenv.StartDovecot(t, testenv.DovecotOptions{TLSCert: backendPKI.Server(t), ImplicitTLS: true, ClientCA: backendPKI.Root})
	dir := t.TempDir()
	caFile := filepath.Join(dir, "backend-ca.pem")
	testenv.WriteFile(t, caFile, testenv.CertPEM(backendPKI.Root))
	frontCert, frontKey := backendPKI.Issue(t, testenv.LeafOptions{CommonName: "front.example.org"}).WriteFiles(t, dir, "front-client")
	for _, tc := range []struct{ name, backend, want string }{
		{"good_with_cert", "\n  cert_file: " + frontCert + "\n  key_file: " + frontKey, "a OK [CAPABILITY"},
		// Dovecot says NO [ALERT] …didn't present valid SSL certificate: a backend
		// problem, not the user's password, so nobody is throttled for it.
		{"fail_without_cert", "", "a NO [UNAVAILABLE] The mail server is not available"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backend := backendFromYAML(t, "address: "+dc.Addr+"\n  tls: implicit\n  ca_file: "+caFile+"\n  server_name: localhost"+tc.backend)
			e := newEnv(t, envOptions{dovecot: dc, mod: func(o *mtls.Options) { o.Backend = backend; o.Throttle.LockoutAfter = 2 }})
			// lockout_after + 2 logins: a refusal of the front itself must not
			// lock the card out.
			for i := 0; i < 4; i++ {
				c := e.dial(t, e.alice)
				c.line()
				c.send("a LOGIN alice@example.org alice-secret\r\n")
				if got := c.until("a "); !strings.HasPrefix(got, tc.want) {
					t.Fatalf("login %d: %q, want %q\ndovecot log:\n%s", i+1, got, tc.want, dc.Log())
				}
				c.c.Close()
			}
		})
	}
}
