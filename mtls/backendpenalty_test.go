package mtls_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/mtls"
	"github.com/imapgate/imapgate/testenv"
)

// TestBackendLoginOutlasted: a backend that holds a LOGIN past backend.login_timeout
// (Dovecot's auth penalty for an untrusted front) is told apart from a backend that
// is down: the log says so, and what to do. A stub stands in for Dovecot because the
// real one cannot be made to delay one chosen LOGIN for a chosen time.
func TestBackendLoginOutlasted(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	ln := serveStub(t, localListen(t), func(c net.Conn) {
		br := bufio.NewReader(c)
		io.WriteString(c, "* OK stub ready\r\n")
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			tag, rest, _ := strings.Cut(line, " ")
			if strings.HasPrefix(strings.ToUpper(rest), "ID") {
				io.WriteString(c, "* ID (\"name\" \"Dovecot\")\r\n"+tag+" OK ID completed.\r\n")
				continue
			}
			<-release // LOGIN: held, as Dovecot's penalty holds it
			return
		}
	})
	e := newEnv(t, envOptions{backendAddr: ln.Addr().String(), mod: func(o *mtls.Options) {
		o.Backend.LoginTimeout = 500 * time.Millisecond
	}})
	c := e.dial(t, e.alice)
	c.line()
	c.send("a LOGIN " + testenv.Alice.Name + " " + testenv.Alice.Password + "\r\n")
	if got := c.line(); !strings.HasPrefix(got, "a NO [UNAVAILABLE]") {
		t.Fatalf("login: %q", got)
	}
	if !strings.Contains(e.logs.String(), "no answer to LOGIN within backend.login_timeout") || !strings.Contains(e.logs.String(), "login_trusted_networks") {
		t.Fatalf("the log does not name the backend's delay and the fix:\n%s", e.logs)
	}
}

// TestLoginTimeoutWarning: a login_timeout shorter than Dovecot's auth penalty, for
// the IMAP backend or a POP3 or SMTP gate's, is warned about by --check (and at start,
// by the same function); the default outlasts it.
func TestLoginTimeoutWarning(t *testing.T) {
	pki := testenv.NewPKI(t)
	for _, tc := range []struct {
		section, timeout string
		warn             bool
	}{
		{"backend", "", false}, {"backend", "15s", true}, {"backend", "30s", false},
		{"pop3.backend", "15s", true}, {"pop3.backend", "", false},
		{"smtp.backend", "10s", true}, {"smtp.backend", "45s", false},
	} {
		t.Run(tc.section+".login_timeout="+tc.timeout, func(t *testing.T) {
			path := checkConfig(t, pki, "good_server", pki.CRL(t, testenv.CRLOptions{}), "")
			timeout := ""
			if tc.timeout != "" {
				timeout = "\n    login_timeout: " + tc.timeout
			}
			switch tc.section {
			case "backend":
				if tc.timeout != "" {
					appendFile(t, path, "  login_timeout: "+tc.timeout+"\n") // under backend:, the last section
				}
			case "pop3.backend":
				appendFile(t, path, "pop3:\n  listen: 127.0.0.1:0\n  backend:\n    address: 127.0.0.1:1"+timeout+"\n")
			case "smtp.backend":
				appendFile(t, path, "smtp:\n  listen: 127.0.0.1:0\n  backend:\n    address: 127.0.0.1:1"+timeout+"\n")
			}
			var out bytes.Buffer
			if err := mtls.Check(context.Background(), path, &out, slog.New(slog.DiscardHandler)); err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(out.String(), "warning: "+tc.section+".login_timeout"); got != tc.warn {
				t.Fatalf("warned %v, want %v:\n%s", got, tc.warn, out.String())
			}
		})
	}
}

// TestBackendNotTrustedWarning: a backend that refuses the front's plaintext logins
// (LOGINDISABLED in its greeting: Dovecot does not count the front as secured, i.e. it
// is not on login_trusted_networks) is reported at start, with the fix. A stub stands
// in for Dovecot, which counts every loopback client as secured.
func TestBackendNotTrustedWarning(t *testing.T) {
	ln := serveStub(t, localListen(t), func(c net.Conn) {
		io.WriteString(c, "* OK [CAPABILITY IMAP4rev1 SASL-IR ID LITERAL+ LOGINDISABLED] Dovecot ready.\r\n")
		io.Copy(io.Discard, c)
	})
	pki := testenv.NewPKI(t)
	cfg, err := mtls.LoadConfig(checkConfig(t, pki, "good_server", pki.CRL(t, testenv.CRLOptions{}), ""))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = freeAddr(t)
	cfg.Backend.Address = ln.Addr().String()
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- mtls.RunConfig(ctx, func() (*mtls.Config, error) { return cfg, nil }, nil, slog.New(slog.NewJSONHandler(logs, nil)))
	}()
	waitFor(t, logs, "refuses plaintext logins from the front (LOGINDISABLED in its greeting): add the front's address to Dovecot's login_trusted_networks")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
