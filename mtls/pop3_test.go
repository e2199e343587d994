package mtls_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
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
	t.Helper()
	var addrs [2]string
	for i, mode := range []mtls.Mode{mtls.ImplicitTLS, mtls.StartTLS} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = ln.Addr().String()
		done := make(chan struct{})
		go func() { front.ServePOP3(ctx, ln, mode); close(done) }()
		t.Cleanup(func() { ln.Close(); <-done })
	}
	return addrs[0], addrs[1]
}

// dialPOP3 connects to the POP3 gate: over TLS with leaf (nil: none), or plain.
func (e *env) dialPOP3(t testing.TB, leaf *testenv.Leaf, implicit bool) *lineConn {
	t.Helper()
	if !implicit {
		c, err := net.DialTimeout("tcp", e.pop3PlainAddr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return newLineConn(t, c)
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", e.pop3Addr, e.clientTLS(leaf))
	if err != nil {
		t.Fatalf("dial POP3 gate: %v", err)
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
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			// A fresh gate per transcript: one's failures do not throttle the next.
			e := newEnv(t, envOptions{dovecot: dc, pop3: true})
			playPOP3(t, e, string(data))
		})
	}
}

func playPOP3(t *testing.T, e *env, script string) {
	leaves := map[string]*testenv.Leaf{"alice": e.alice, "bob": e.bob, "none": nil}
	implicit, leaf := true, e.alice
	var c *lineConn
	conn := func() *lineConn {
		if c == nil {
			c = e.dialPOP3(t, leaf, implicit)
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
