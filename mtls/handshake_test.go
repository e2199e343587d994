package mtls_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"maps"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/mtls"
	"github.com/imapgate/imapgate/testenv"
)

// TestCertificateRequestNamesCA: the CertificateRequest names the roots and every
// intermediate the front knows (the CRL issuer and tls.client_intermediates_file), so
// that NSS offers a smartcard that holds only the user's leaf (it links the leaf to a
// listed CA by its issuer name); with the roots alone Thunderbird sent nothing.
func TestCertificateRequestNamesCA(t *testing.T) {
	var other *x509.Certificate
	e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1", mod: func(o *mtls.Options) {
		other, _ = testenv.NewPKI(t).NewIntermediate(t, "imapgate test extra intermediate")
		o.ClientIntermediates = []*x509.Certificate{other}
	}})
	want := map[string]bool{
		e.pki.Root.Subject.String():         true,
		e.pki.Intermediate.Subject.String(): true,
		other.Subject.String():              true,
	}
	var acceptable [][]byte
	cfg := e.clientTLS(nil)
	c := e.alice.TLSCertificate()
	cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		acceptable = cri.AcceptableCAs
		return &c, nil
	}
	conn, err := tls.Dial("tcp", e.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := newLineConn(t, conn).line(); !strings.HasPrefix(got, "* OK") {
		t.Fatalf("greeting %q", got)
	}
	got := map[string]bool{}
	for _, raw := range acceptable {
		var name pkix.RDNSequence
		if _, err := asn1.Unmarshal(raw, &name); err != nil {
			t.Fatalf("acceptable CA %x: %v", raw, err)
		}
		var n pkix.Name
		n.FillFromRDNSequence(&name)
		got[n.String()] = true
	}
	if !maps.Equal(got, want) {
		t.Fatalf("acceptable CAs %v, want %v", got, want)
	}

	// What a person debugging a mail program would look at.
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("openssl not installed (scripts/deps.sh installs it): %v", err)
	}
	out := opensslClient(t, e.addr, "")
	for n := range want {
		// openssl prints the names RFC 2253-style with commas and no spaces.
		cn := strings.TrimPrefix(strings.Split(n, ",")[0], "CN=")
		if !strings.Contains(out, "CN = "+cn) && !strings.Contains(out, "CN="+cn) {
			t.Errorf("openssl s_client does not list %q as acceptable:\n%s", cn, out)
		}
	}
	if !strings.Contains(out, "Acceptable client certificate CA names") {
		t.Errorf("openssl s_client saw no CertificateRequest:\n%s", out)
	}
}

// opensslClient runs `openssl s_client` against addr with args, sends input (lines end
// in CRLF), waits for the server to close and returns everything it printed.
func opensslClient(t *testing.T, addr, input string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "openssl", append([]string{"s_client", "-connect", addr, "-ign_eof", "-crlf"}, args...)...)
	cmd.Stdin = strings.NewReader(input)
	out, _ := cmd.CombinedOutput()
	return string(out)
}

// TestShutdownCutsStalledHandshake: a handshake bounds itself by a deadline on the
// socket rather than by a context, so the end of the server must reach it another way:
// Shutdown (past its drain time) and Close close the connection of every handshake in
// flight, at once, instead of waiting out timeouts.handshake. Two stalls: a client that
// connected and sent nothing, and one that stops while choosing its certificate (the
// front has answered its ClientHello and waits for the Certificate message).
func TestShutdownCutsStalledHandshake(t *testing.T) {
	for _, tc := range []struct {
		name  string
		close func(*mtls.Server)
	}{
		{"shutdown", func(s *mtls.Server) { s.Shutdown(context.Background()) }},
		{"close", func(s *mtls.Server) { s.Close() }},
	} {
		for _, stall := range []string{"silent", "choosing_certificate"} {
			t.Run(tc.name+"_"+stall, func(t *testing.T) {
				e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1", mod: func(o *mtls.Options) {
					o.HandshakeTimeout = time.Minute
					o.DrainTimeout = 100 * time.Millisecond
				}})
				conn, err := net.DialTimeout("tcp", e.addr, 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				hs := make(chan error, 1)
				release := make(chan struct{})
				defer close(release)
				if stall == "silent" {
					// The front has the connection once it counts it; give it a moment to
					// reach its handshake read.
					for deadline := time.Now().Add(10 * time.Second); counter(t, e.front.Metrics(), "imapgate_front_sessions_active") < 1; time.Sleep(10 * time.Millisecond) {
						if time.Now().After(deadline) {
							t.Fatal("the front never took the connection")
						}
					}
					time.Sleep(200 * time.Millisecond)
				} else {
					cfg := e.clientTLS(e.alice)
					get := cfg.GetClientCertificate
					asked := make(chan struct{})
					cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
						close(asked)
						<-release
						return get(cri)
					}
					go func() { hs <- tls.Client(conn, cfg).Handshake() }()
					select {
					case <-asked:
					case <-time.After(20 * time.Second):
						t.Fatal("the front never asked for a certificate")
					}
				}
				start := time.Now()
				closed := make(chan struct{})
				go func() { tc.close(e.front); close(closed) }()
				select {
				case <-closed:
				case <-time.After(10 * time.Second):
					t.Fatal("the server still waits for a stalled handshake after 10 s (timeouts.handshake is a minute)")
				}
				if stall == "silent" {
					// The front closed the connection: the client reads its end, not a timeout.
					conn.SetReadDeadline(time.Now().Add(5 * time.Second))
					if n, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
						t.Fatalf("read after the server's end: %d bytes, %v; want the connection closed", n, err)
					}
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("the stalled handshake was cut after %v", d)
				}
			})
		}
	}
}
