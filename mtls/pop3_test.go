package mtls_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/mtls"
	"github.com/imapgate/imapgate/testenv"
)

// servePOP3 serves the POP3 gate of front on two new 127.0.0.1 ports, implicit TLS
// and STLS, until ctx ends.
func servePOP3(t testing.TB, ctx context.Context, front *mtls.Server) (tlsAddr, plainAddr string) {
	return serveGate(t, ctx, front.ServePOP3)
}

// serveGate serves one protocol's gate (serve: Server.ServePOP3, ServeSMTP) on two
// new 127.0.0.1 ports, implicit TLS and STARTTLS, until ctx ends.
func serveGate(t testing.TB, ctx context.Context, serve func(context.Context, net.Listener, mtls.Mode) error) (tlsAddr, plainAddr string) {
	t.Helper()
	var addrs [2]string
	for i, mode := range []mtls.Mode{mtls.ImplicitTLS, mtls.StartTLS} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = ln.Addr().String()
		done := make(chan struct{})
		go func() { serve(ctx, ln, mode); close(done) }()
		t.Cleanup(func() { ln.Close(); <-done })
	}
	return addrs[0], addrs[1]
}

// dialPOP3 connects to the POP3 gate: over TLS with leaf (nil: none), or plain.
func (e *env) dialPOP3(t testing.TB, leaf *testenv.Leaf, implicit bool) *lineConn {
	return e.dialPOP3From(t, nil, leaf, implicit)
}

// dialPOP3From is dialPOP3 from a local address (nil: any).
func (e *env) dialPOP3From(t testing.TB, local net.IP, leaf *testenv.Leaf, implicit bool) *lineConn {
	t.Helper()
	addr := e.pop3Addr
	if !implicit {
		addr = e.pop3PlainAddr
	}
	return e.dialGate(t, addr, local, leaf, implicit)
}

// dialGate connects to addr from a local address (nil: any): over TLS with leaf (nil:
// no certificate) when implicit, else plain.
func (e *env) dialGate(t testing.TB, addr string, local net.IP, leaf *testenv.Leaf, implicit bool) *lineConn {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	if local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	if !implicit {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return newLineConn(t, c)
	}
	c, err := tls.DialWithDialer(d, "tcp", addr, e.clientTLS(leaf))
	if err != nil {
		t.Fatalf("dial gate %s: %v", addr, err)
	}
	return newLineConn(t, c)
}

// starttls upgrades l to TLS with leaf, after the server's go-ahead.
func (e *env) starttls(t testing.TB, l *lineConn, leaf *testenv.Leaf) {
	t.Helper()
	if l.br.Buffered() > 0 {
		t.Fatal("bytes after the go-ahead for TLS")
	}
	tc := tls.Client(l.c, e.clientTLS(leaf))
	tc.SetDeadline(time.Now().Add(20 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake after STLS: %v", err)
	}
	tc.SetDeadline(time.Time{})
	l.c = tc
	l.br.Reset(tc)
}

// TestPOP3Transcripts plays the golden transcripts of testdata/pop3 against the POP3
// gate in front of Dovecot's POP3. A transcript has header lines (port: tls|plain,
// cert: alice|bob|none), then "C: line" sent (\r\n inside is sent as is, {{N x}} is N
// bytes x), "S: line" expected exactly, "S~ prefix", "tls" (the STLS handshake),
// "closed" (the gate ends the connection) and "log: text" (in the gate's log).
func TestPOP3Transcripts(t *testing.T) {
	dc := testenv.StartDovecot(t, testenv.DovecotOptions{POP3: true})
	files, _ := filepath.Glob("testdata/pop3/*.txt")
	if len(files) == 0 {
		t.Fatal("no transcripts in testdata/pop3")
	}
	for i, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		// Each from its own loopback address: Dovecot's auth penalty counts failed
		// logins per client address (the one the gate forwards), and would delay the
		// good transcripts behind the failing ones past the backend timeout.
		local := net.IPv4(127, 0, 1, byte(i+1))
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			// A fresh gate per transcript: one's failures do not throttle the next.
			e := newEnv(t, envOptions{dovecot: dc, pop3: true})
			playPOP3(t, e, local, string(data))
		})
	}
}

func playPOP3(t *testing.T, e *env, local net.IP, script string) {
	playScript(t, e, script, func(leaf *testenv.Leaf, implicit bool) *lineConn {
		return e.dialPOP3From(t, local, leaf, implicit)
	}, nil)
}

// playScript plays a golden transcript (see TestPOP3Transcripts) on the connection
// dial opens at the first line that needs it; extra, if not nil, reads the lines of
// a protocol's own (it reports whether it knew the line).
func playScript(t *testing.T, e *env, script string, dial func(leaf *testenv.Leaf, implicit bool) *lineConn, extra func(where, line string) bool) {
	t.Helper()
	leaves := map[string]*testenv.Leaf{"alice": e.alice, "bob": e.bob, "none": nil}
	implicit, leaf := true, e.alice
	var c *lineConn
	conn := func() *lineConn {
		if c == nil {
			c = dial(leaf, implicit)
		}
		return c
	}
	for n, raw := range strings.Split(script, "\n") {
		line := strings.TrimRight(raw, "\r")
		where := "line " + strconv.Itoa(n+1)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "port: "):
			implicit = strings.TrimPrefix(line, "port: ") == "tls"
		case strings.HasPrefix(line, "cert: "):
			leaf = leaves[strings.TrimPrefix(line, "cert: ")]
		case strings.HasPrefix(line, "C: "):
			conn().send(expandPOP3(strings.TrimPrefix(line, "C: ")) + "\r\n")
		case strings.HasPrefix(line, "S: "):
			if got, want := conn().line(), strings.TrimPrefix(line, "S: "); got != want {
				t.Fatalf("%s: got %q, want %q", where, got, want)
			}
		case strings.HasPrefix(line, "S~ "):
			if got, want := conn().line(), strings.TrimPrefix(line, "S~ "); !strings.HasPrefix(got, want) {
				t.Fatalf("%s: got %q, want it to start with %q", where, got, want)
			}
		case line == "tls":
			e.starttls(t, conn(), leaf)
		case line == "closed":
			if rest := conn().closed(); len(rest) > 0 {
				t.Fatalf("%s: more lines before the close: %q", where, rest)
			}
		case strings.HasPrefix(line, "log: "):
			want := strings.TrimPrefix(line, "log: ")
			waitFor(t, e.logs, want)
		case extra != nil && extra(where, line):
		default:
			t.Fatalf("%s: cannot read %q", where, line)
		}
	}
}

// expandPOP3 turns \r\n into CRLF and {{N x}} into N bytes x.
func expandPOP3(s string) string {
	s = strings.ReplaceAll(s, `\r\n`, "\r\n")
	if i := strings.Index(s, "{{"); i >= 0 {
		if j := strings.Index(s[i:], "}}"); j > 0 {
			num, ch, _ := strings.Cut(s[i+2:i+j], " ")
			k, _ := strconv.Atoi(num)
			s = s[:i] + strings.Repeat(ch, k) + s[i+j+2:]
		}
	}
	return s
}

// TestPOP3SharedCore: the POP3 gate shares the IMAP front's registry, throttle and
// address forwarding. Failed logins on IMAP and POP3 count against one certificate;
// a revoked card's live POP3 and IMAP sessions both end, each in its own words, while
// another card's POP3 session goes on; Dovecot logs the client's address (XCLIENT).
func TestPOP3SharedCore(t *testing.T) {
	t.Run("one_throttle", func(t *testing.T) {
		e := newEnv(t, envOptions{pop3: true, mod: func(o *mtls.Options) {
			o.Throttle = mtls.Throttle{BaseDelay: 10 * time.Millisecond, MaxDelay: 40 * time.Millisecond, LockoutAfter: 3, LockoutFor: time.Hour}
		}})
		c := e.dial(t, e.alice)
		c.line()
		for i := range 2 {
			c.send("a LOGIN alice@example.org wrong" + strconv.Itoa(i) + "\r\n")
			if got := c.line(); got != "a NO [AUTHENTICATIONFAILED] Authentication failed." {
				t.Fatalf("IMAP attempt %d: %q", i, got)
			}
		}
		p := e.dialPOP3(t, e.alice, true)
		p.line()
		p.send("USER alice@example.org\r\nPASS wrong-pop\r\n")
		p.line()
		if got := p.line(); got != "-ERR [AUTH] Authentication failed." {
			t.Fatalf("POP3 attempt: %q", got)
		}
		// Three failures, two on IMAP and one on POP3: the certificate is locked out
		// on both, the right password included.
		p.send("USER alice@example.org\r\nPASS alice-secret\r\n")
		p.line()
		if got := p.line(); !strings.HasPrefix(got, "-ERR [SYS/TEMP] Too many failed logins") {
			t.Fatalf("POP3 after lockout: %q", got)
		}
		c.send("b LOGIN alice@example.org alice-secret\r\n")
		if got := c.line(); !strings.HasPrefix(got, "b NO [UNAVAILABLE] Too many failed logins") {
			t.Fatalf("IMAP after lockout: %q", got)
		}
		// Bob's card is not alice's: it logs in. From another address: Dovecot's own
		// auth penalty counts the failures above against 127.0.0.1 (the address the
		// gate forwards), and would hold bob's login past the backend timeout.
		b := e.dialPOP3From(t, net.IPv4(127, 0, 0, 2), e.bob, true)
		b.line()
		b.send("USER bob@example.org\r\nPASS bob-secret\r\n")
		b.line()
		if got := b.line(); got != "+OK Logged in." {
			t.Fatalf("bob: %q", got)
		}
	})
	t.Run("revocation", func(t *testing.T) {
		e := newEnv(t, envOptions{pop3: true, crlInterval: 50 * time.Millisecond})
		p := e.dialPOP3(t, e.alice, true)
		p.line()
		p.send("USER alice@example.org\r\nPASS alice-secret\r\n")
		p.line()
		if got := p.line(); got != "+OK Logged in." {
			t.Fatalf("alice POP3 login: %q", got)
		}
		c := e.dial(t, e.alice)
		c.line()
		c.send("a LOGIN alice@example.org alice-secret\r\n")
		c.until("a OK")
		b := e.dialPOP3(t, e.bob, true)
		b.line()
		b.send("USER bob@example.org\r\nPASS bob-secret\r\n")
		b.line()
		b.line()
		waitDovecotLog(t, e, "rip=127.0.0.1") // XCLIENT forwarded the client's address

		e.pki.Revoke(e.alice.Cert.SerialNumber)
		testenv.WriteFile(t, e.crlFile, e.pki.CRL(t, testenv.CRLOptions{}))
		if lines := p.closed(); len(lines) != 1 || lines[0] != "-ERR [SYS/PERM] Your certificate has been revoked. Call the help desk for a new smartcard certificate." {
			t.Fatalf("alice's POP3 session ended with %q", lines)
		}
		if lines := c.closed(); len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "* BYE [ALERT] Your certificate has been revoked") {
			t.Fatalf("alice's IMAP session ended with %q", lines)
		}
		b.send("STAT\r\n")
		if got := b.line(); !strings.HasPrefix(got, "+OK 3 ") {
			t.Fatalf("bob's POP3 session: %q", got)
		}
		// A new POP3 connection with the revoked card is refused in words.
		p2 := e.dialPOP3(t, e.alice, true)
		if got := p2.closed(); len(got) != 1 || !strings.HasPrefix(got[0], "-ERR [SYS/PERM] Your certificate has been revoked") {
			t.Fatalf("new POP3 connection after revocation: %q", got)
		}
	})
}

// TestPOP3Interop: real clients through the POP3 gate — openssl s_client -starttls
// pop3 with the card's certificate from files, and curl pop3s:// with the card's key
// on a SoftHSM2 token through OpenSSL's PKCS#11 engine, as the demo does for IMAP.
func TestPOP3Interop(t *testing.T) {
	e := newEnv(t, envOptions{pop3: true})
	dir := t.TempDir()
	certFile, keyFile := e.alice.WriteFiles(t, dir, "alice")
	rootFile := filepath.Join(dir, "root.pem")
	testenv.WriteFile(t, rootFile, testenv.CertPEM(e.pki.Root))

	t.Run("openssl_starttls_pop3", func(t *testing.T) {
		out := runTool(t, nil, "USER alice@example.org\nPASS alice-secret\nSTAT\nQUIT\n",
			"openssl", "s_client", "-connect", e.pop3PlainAddr, "-starttls", "pop3", "-servername", "localhost",
			"-cert", certFile, "-cert_chain", certFile, "-key", keyFile, "-CAfile", rootFile,
			"-verify_return_error", "-crlf", "-quiet", "-ign_eof")
		for _, want := range []string{"+OK Logged in.", "+OK 3 "} {
			if !strings.Contains(out, want) {
				t.Errorf("s_client output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("curl_pop3s_pkcs11", func(t *testing.T) {
		card, env := curlCard(t, dir, certFile, keyFile)
		out := runTool(t, env, "", "curl", append(card, "-sS", "--max-time", "50", "--cacert", rootFile,
			"--user", testenv.Alice.Name+":"+testenv.Alice.Password, "pop3s://localhost:"+port(e.pop3Addr)+"/1",
			"--connect-to", "localhost:"+port(e.pop3Addr)+":"+e.pop3Addr)...)
		if !strings.Contains(out, "Hello alice@example.org, this is message 1.") {
			t.Errorf("curl did not fetch message 1:\n%s", out)
		}
		out, err := runToolErr(env, "", "curl", append(card, "-sS", "--max-time", "50", "--cacert", rootFile,
			"--user", testenv.Alice.Name+":nope", "pop3s://localhost:"+port(e.pop3Addr)+"/1",
			"--connect-to", "localhost:"+port(e.pop3Addr)+":"+e.pop3Addr)...)
		if err == nil || !strings.Contains(out, "Login denied") {
			t.Errorf("curl with a wrong password: %v\n%s", err, out)
		}
	})
}

// curlCard puts alice's key and certificate (the PEM files) on a new SoftHSM2 token
// and returns curl's arguments to use them through OpenSSL's PKCS#11 engine, and the
// environment that finds the token.
func curlCard(t *testing.T, dir, certFile, keyFile string) (args, env []string) {
	t.Helper()
	tok := testenv.SoftHSMLabel(t, "alice-card")
	keyDER := filepath.Join(dir, "alice.key.der")
	runTool(t, nil, "", "openssl", "pkcs8", "-topk8", "-nocrypt", "-in", keyFile, "-outform", "DER", "-out", keyDER)
	certDER := filepath.Join(dir, "alice.crt.der")
	runTool(t, nil, "", "openssl", "x509", "-in", certFile, "-outform", "DER", "-out", certDER)
	for _, obj := range [][]string{{"privkey", keyDER}, {"cert", certDER}} {
		testenv.RunTool(t, tok.Env(), "pkcs11-tool", "--module", tok.Module, "--token-label", tok.Label, "--login", "--pin", tok.PIN,
			"--write-object", obj[1], "--type", obj[0], "--id", "01", "--label", "alice")
	}
	uri := "pkcs11:token=alice-card;object=alice"
	args = []string{"--engine", "pkcs11", "--cert-type", "ENG", "--cert", uri + ";type=cert",
		"--key-type", "ENG", "--key", uri + ";type=private;pin-value=" + tok.PIN}
	return args, append(tok.Env(), "PKCS11_MODULE_PATH="+tok.Module)
}

// frontYAML writes the front's certificate and key, the roots, the intermediate and
// an empty CRL of pki into dir, and returns the shared sections of a front's config
// file using them (listen on a free port, tls, crl, crl_state_file, the IMAP backend
// at backend, a 1 s drain).
func frontYAML(t *testing.T, pki *testenv.PKI, dir, backend string) string {
	t.Helper()
	srvCert, srvKey := pki.Server(t).WriteFiles(t, dir, "server")
	testenv.WriteFile(t, filepath.Join(dir, "roots.pem"), testenv.CertPEM(pki.Root))
	testenv.WriteFile(t, filepath.Join(dir, "intermediate.pem"), testenv.CertPEM(pki.Intermediate))
	testenv.WriteFile(t, filepath.Join(dir, "ca.crl"), pki.CRL(t, testenv.CRLOptions{}))
	return fmt.Sprintf(`listen: %q
tls:
  cert_file: %s
  key_file: %s
  client_ca_file: %[4]s/roots.pem
crl:
  - file: %[4]s/ca.crl
    issuer_file: %[4]s/intermediate.pem
crl_state_file: %[4]s/crl-state.json
backend:
  address: %s
timeouts:
  drain: 1s
`, freeAddr(t), srvCert, srvKey, dir, backend)
}

// runFront runs the front from the file at path, as `imapgate front --config` does,
// until cancel (SIGTERM); a send on reload is a SIGHUP, done says how Run returned.
func runFront(t *testing.T, path string) (logs *syncBuffer, reload chan struct{}, cancel context.CancelFunc, done chan error) {
	logs = &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	reload = make(chan struct{}, 1)
	done = make(chan error, 1)
	go func() { done <- mtls.Run(ctx, path, reload, slog.New(slog.NewJSONHandler(logs, nil))) }()
	return logs, reload, cancel, done
}

// drained cancels a front of runFront and waits for Run to return without error.
func drained(t *testing.T, cancel context.CancelFunc, done chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// runTool runs a program (env nil: inherited) with stdin and returns its output; it
// fails the test when the program is missing, hangs or fails.
func runTool(t *testing.T, env []string, stdin, name string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s not installed: run make deps", name)
	}
	out, err := runToolErr(env, stdin, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runToolErr(env []string, stdin, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestPOP3FromConfig runs the gate from a file with a pop3 section, as `imapgate
// front --config` does: POP3 over TLS serves a login, a reload (SIGHUP) adds the STLS
// port and the live session goes on, and a cancel (SIGTERM) drains and returns.
func TestPOP3FromConfig(t *testing.T) {
	pki := testenv.NewPKI(t)
	dc := testenv.StartDovecot(t, testenv.DovecotOptions{POP3: true})
	dir := t.TempDir()
	shared := frontYAML(t, pki, dir, dc.Addr)
	alice := pki.Issue(t, testenv.LeafOptions{Emails: []string{testenv.Alice.Name}})
	pop3s, stls := freeAddr(t), freeAddr(t)
	conf := func(stlsListen string) []byte {
		return []byte(shared + fmt.Sprintf(`pop3:
  listen: %q
  stls_listen: %q
  backend:
    address: %s
`, pop3s, stlsListen, dc.POP3Addr))
	}
	path := filepath.Join(dir, "front.yaml")
	testenv.WriteFile(t, path, conf(""))
	logs, reload, cancel, done := runFront(t, path)
	waitFor(t, logs, "POP3 gate listening")

	e := &env{pki: pki, pop3Addr: pop3s, pop3PlainAddr: stls}
	p := e.dialPOP3(t, alice, true)
	p.line()
	p.send("USER alice@example.org\r\nPASS alice-secret\r\n")
	p.line()
	if got := p.line(); got != "+OK Logged in." {
		t.Fatalf("login: %q\n%s", got, logs)
	}
	testenv.WriteFile(t, path, conf(stls))
	reload <- struct{}{}
	waitForLine(t, logs, "POP3 gate listening", `"stls":true`)
	s := e.dialPOP3(t, nil, false)
	if got := s.line(); !strings.HasPrefix(got, "+OK imapgate POP3 ready; STLS") {
		t.Fatalf("STLS port after reload: %q", got)
	}
	p.send("STAT\r\n")
	if got := p.line(); !strings.HasPrefix(got, "+OK 3 ") {
		t.Fatalf("live session after reload: %q", got)
	}
	drained(t, cancel, done)
	if lines := p.closed(); len(lines) != 1 || !strings.HasPrefix(lines[0], "-ERR [SYS/TEMP] This server is shutting down") {
		t.Fatalf("drained POP3 session ended with %q", lines)
	}
}
