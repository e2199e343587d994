package mtls_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/crl"
	"github.com/imapgate/imapgate/mtls"
	"github.com/imapgate/imapgate/testenv"
)

// env is a front on 127.0.0.1 in front of a private Dovecot, with a test PKI and a CRL
// file the test can rewrite.
type env struct {
	pki     *testenv.PKI
	dovecot *testenv.Dovecot
	server  *testenv.Leaf
	crlFile string
	store   *crl.Store
	front   *mtls.Server
	addr    string
	logs    *syncBuffer
	cancel  context.CancelFunc

	pop3Addr, pop3PlainAddr string // with envOptions.pop3: implicit TLS, STLS (pop3_test.go)

	alice, bob *testenv.Leaf
}

type envOptions struct {
	dovecot     *testenv.Dovecot // shared one, or nil to start one
	backendAddr string           // overrides the Dovecot address
	mod         func(*mtls.Options)
	crlInterval time.Duration // > 0: run the CRL poller
	crlGrace    time.Duration // grace past nextUpdate; 0: the default
	mode        mtls.Mode
	pop3        bool // Dovecot with POP3, and the POP3 gate on two more ports
}

// syncBuffer collects log lines from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	e := &env{pki: testenv.NewPKI(t), logs: &syncBuffer{}}
	e.dovecot = o.dovecot
	if e.dovecot == nil && o.backendAddr == "" {
		e.dovecot = testenv.StartDovecot(t, testenv.DovecotOptions{POP3: o.pop3})
	}
	backend := o.backendAddr
	if backend == "" {
		backend = e.dovecot.Addr
	}
	e.server = e.pki.Server(t)
	e.alice = e.pki.Issue(t, testenv.LeafOptions{Emails: []string{testenv.Alice.Name}})
	e.bob = e.pki.Issue(t, testenv.LeafOptions{Emails: []string{testenv.Bob.Name}})

	dir := t.TempDir()
	e.crlFile = filepath.Join(dir, "ca.crl")
	testenv.WriteFile(t, e.crlFile, e.pki.CRL(t, testenv.CRLOptions{}))
	store, err := crl.NewStore(crl.Options{File: e.crlFile, Issuer: e.pki.Intermediate, Interval: o.crlInterval, Grace: o.crlGrace})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.store = store
	logger := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts := mtls.Options{
		Certificates: []tls.Certificate{e.server.TLSCertificate()},
		ClientRoots:  e.pki.Pool(),
		CRLs:         []*crl.Store{store},
		Backend:      mtls.BackendOptions{Address: backend, DialTimeout: 5 * time.Second, LoginTimeout: 10 * time.Second},
		// Small delays keep failure tests quick; the growth is still exercised.
		Throttle:         mtls.Throttle{BaseDelay: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond},
		HandshakeTimeout: 20 * time.Second, // generous: CI machines are loaded
		Logger:           logger,
	}
	if o.pop3 {
		opts.POP3.Backend = mtls.BackendOptions{Address: e.dovecot.POP3Addr, DialTimeout: 5 * time.Second, LoginTimeout: 10 * time.Second}
	}
	if o.mod != nil {
		o.mod(&opts)
	}
	front, err := mtls.New(opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.front = front
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	served := make(chan struct{})
	go func() { front.Serve(ctx, ln, o.mode); close(served) }()
	if o.pop3 {
		e.pop3Addr, e.pop3PlainAddr = servePOP3(t, ctx, front)
	}
	if o.crlInterval > 0 {
		go store.Run(ctx)
	}
	t.Cleanup(func() {
		cancel()
		<-served
		front.Close()
		if t.Failed() {
			t.Logf("front log:\n%s", e.logs.String())
		}
	})
	return e
}

// publishCRL writes a new CRL (listing everything revoked in the PKI) and loads it.
func (e *env) publishCRL(t testing.TB, o testenv.CRLOptions) {
	t.Helper()
	testenv.WriteFile(t, e.crlFile, e.pki.CRL(t, o))
	if _, err := e.store.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// clientTLS is a TLS client config presenting leaf (nil: no certificate).
func (e *env) clientTLS(leaf *testenv.Leaf) *tls.Config {
	pool := e.pki.Pool()
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	if leaf != nil {
		c := leaf.TLSCertificate()
		// Send it even when the server's list of acceptable CAs does not name its
		// issuer (self-signed, other CA): we test what the front does with it.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	return cfg
}

// dial connects with leaf and returns a line-level client.
func (e *env) dial(t testing.TB, leaf *testenv.Leaf) *lineConn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", e.addr, e.clientTLS(leaf))
	if err != nil {
		t.Fatalf("dial front: %v", err)
	}
	return newLineConn(t, c)
}

// lineConn reads and writes IMAP lines with generous deadlines.
type lineConn struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func newLineConn(t testing.TB, c net.Conn) *lineConn {
	t.Cleanup(func() { c.Close() })
	return &lineConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (l *lineConn) send(s string) {
	l.t.Helper()
	l.c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(l.c, s); err != nil {
		l.t.Fatalf("send %.80q: %v", s, err)
	}
}

// line reads one line (without CRLF) or fails the test.
func (l *lineConn) line() string {
	l.t.Helper()
	s, err := l.readLine()
	if err != nil {
		l.t.Fatalf("read: %v", err)
	}
	return s
}

func (l *lineConn) readLine() (string, error) {
	l.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	s, err := l.br.ReadString('\n')
	if err != nil {
		return s, err
	}
	return strings.TrimRight(s, "\r\n"), nil
}

// until reads lines until one starts with prefix and returns it.
func (l *lineConn) until(prefix string) string {
	l.t.Helper()
	for {
		s := l.line()
		if strings.HasPrefix(s, prefix) {
			return s
		}
	}
}

// closed asserts the server closes the connection (after any lines), returning them.
func (l *lineConn) closed() []string {
	l.t.Helper()
	var lines []string
	for {
		s, err := l.readLine()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				l.t.Fatalf("server did not close the connection; got %q", lines)
			}
			return lines
		}
		lines = append(lines, s)
		if len(lines) > 1000 {
			l.t.Fatalf("server keeps talking: %q", lines[:10])
		}
	}
}

func plain(authz, user, pass string) string {
	return b64(authz + "\x00" + user + "\x00" + pass)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// ticketKeyLine is a fresh random session ticket key, as a line of the key file.
func ticketKeyLine() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:]) + "\n"
}
