package enrollui

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/mtls"
	"github.com/imapgate/imapgate/pkcs11"
	"github.com/imapgate/imapgate/testenv"
)

// testFront is a real front (mtls.Run, as `imapgate front` runs it) before a
// private Dovecot, trusting the test CA and polling its CRL every second.
type testFront struct {
	addr  string
	roots *x509.CertPool
	u     *testUI
}

func startFront(t *testing.T, u *testUI) *testFront {
	t.Helper()
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	pki := testenv.NewPKI(t)
	dir := t.TempDir()
	certFile, keyFile := pki.Server(t).WriteFiles(t, dir, "front")
	issuer := filepath.Join(dir, "intermediate.pem")
	testenv.WriteFile(t, issuer, testenv.CertPEM(u.ca.Intermediate))
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg := fmt.Sprintf(`listen: %q
crl_state_file: %s
tls:
  cert_file: %s
  key_file: %s
  client_ca_file: %s
crl:
  - url: %s/crl
    issuer_file: %s
    interval: 1s
backend:
  address: %s
throttle:
  base_delay: 10ms
  max_delay: 20ms
`, addr, filepath.Join(dir, "crl-state.json"), certFile, keyFile, u.ca.RootsPEM, u.ca.PublicURL, issuer, d.Addr)
	path := filepath.Join(dir, "front.yaml")
	testenv.WriteFile(t, path, []byte(cfg))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mtls.Run(ctx, path, nil, slog.New(slog.NewJSONHandler(io.Discard, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("front: %v", err)
		}
	})
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if i > 200 {
			t.Fatalf("front at %s does not listen: %v", addr, err)
		}
		waitABit()
	}
	return &testFront{addr: addr, roots: pki.Pool(), u: u}
}

// imapSession is a connection through the front with the token's key.
type imapSession struct {
	conn  *tls.Conn
	r     *bufio.Reader
	close func()
}

// dial connects with the certificate and key on the test token, unlocked
// with pin, as Thunderbird does with the card.
func (f *testFront) dial(t *testing.T, pin string) (*imapSession, error) {
	t.Helper()
	mod, err := pkcs11.Open(f.u.tok.Module)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := mod.OpenToken(f.u.tok.Serial)
	if err != nil {
		mod.Close()
		t.Fatal(err)
	}
	closeTok := func() { tok.Close(); mod.Close() }
	if err := tok.Login(pkcs11.NewPIN(pin)); err != nil {
		closeTok()
		t.Fatalf("token login with PIN: %v", err)
	}
	creds, err := tok.Credentials()
	if err != nil || len(creds) != 1 || len(creds[0].Certs) != 1 {
		closeTok()
		t.Fatalf("token credentials: %v %v", creds, err)
	}
	key, err := tok.FindKey(creds[0].ID)
	if err != nil {
		closeTok()
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", f.addr, &tls.Config{RootCAs: f.roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12,
		// The chain as the card holds it (Enroll wrote the CA certificates
		// too): a client offers a certificate only when its chain reaches a
		// CA the front names in its CertificateRequest (the root).
		Certificates: []tls.Certificate{{Certificate: [][]byte{creds[0].Certs[0].Raw, f.u.ca.Intermediate.Raw}, PrivateKey: key.Signer()}}})
	if err != nil {
		closeTok()
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	return &imapSession{conn: conn, r: bufio.NewReader(conn), close: func() { conn.Close(); closeTok() }}, nil
}

// login logs in through the front and returns the tagged answer, with any
// untagged lines before it.
func (s *imapSession) login(user, password string) (string, error) {
	greeting, err := s.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(greeting, "* OK") {
		return greeting, nil
	}
	if _, err := fmt.Fprintf(s.conn, "a1 LOGIN %s %s\r\n", user, password); err != nil {
		return "", err
	}
	var out strings.Builder
	for {
		line, err := s.r.ReadString('\n')
		out.WriteString(line)
		if err != nil || strings.HasPrefix(line, "a1 ") || strings.HasPrefix(line, "* BYE") {
			return out.String(), err
		}
	}
}

// loginOK logs in with the card (PIN pin) and alice's password, and keeps
// the session open when keep is set.
func (f *testFront) loginOK(t *testing.T, pin string, keep bool) *imapSession {
	t.Helper()
	s, err := f.dial(t, pin)
	if err != nil {
		t.Fatalf("TLS through the front with the token's certificate: %v", err)
	}
	ans, err := s.login(testenv.Alice.Name, testenv.Alice.Password)
	if err != nil || !strings.HasPrefix(ans, "a1 OK") {
		s.close()
		t.Fatalf("login through the front: %q %v", ans, err)
	}
	if !keep {
		s.close()
		return nil
	}
	return s
}

// waitRevoked waits for the live session's BYE [ALERT] and for a new login
// to be refused, once the front's CRL poll has seen the revocation.
func (f *testFront) waitRevoked(t *testing.T, live *imapSession, pin string) {
	t.Helper()
	if _, err := fmt.Fprintf(live.conn, "a2 IDLE\r\n"); err != nil {
		live.close()
		t.Fatal(err)
	}
	var got strings.Builder
	for {
		line, err := live.r.ReadString('\n')
		got.WriteString(line)
		if strings.HasPrefix(line, "* BYE") {
			if !strings.Contains(line, "[ALERT]") || !strings.Contains(line, "revoked") {
				live.close()
				t.Fatalf("live session ended with %q, want BYE [ALERT] … revoked", line)
			}
			break
		}
		if err != nil {
			live.close()
			t.Fatalf("live session after revocation: %v; read %q", err, got.String())
		}
	}
	live.close() // the token's login belongs to one session of the process
	s, err := f.dial(t, pin)
	if err != nil {
		if !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("new connection after revocation: %v, want a revoked-certificate refusal", err)
		}
		t.Logf("new connection after revocation: %v", err)
		return
	}
	defer s.close()
	ans, err := s.login(testenv.Alice.Name, testenv.Alice.Password)
	if strings.Contains(ans, "a1 OK") {
		t.Fatalf("a revoked certificate logged in: %q", ans)
	}
	t.Logf("new login after revocation: %q %v", ans, err)
	if err != nil && !strings.Contains(err.Error(), "revoked") || err == nil && !strings.Contains(ans, "revoked") {
		t.Fatalf("new login after revocation: %q %v, want a revoked refusal", ans, err)
	}
}
