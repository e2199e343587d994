package mtls_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/imapgate/imapgate/mtls"
	"github.com/imapgate/imapgate/testenv"
)

// TestInterop talks to the front with other TLS stacks: openssl s_client and curl
// (both OpenSSL) with a client certificate from files, as an admin would by hand.
func TestInterop(t *testing.T) {
	e := newEnv(t, envOptions{})
	dir := t.TempDir()
	certFile, keyFile := e.alice.WriteFiles(t, dir, "alice")
	rootFile := filepath.Join(dir, "root.pem")
	testenv.WriteFile(t, rootFile, testenv.CertPEM(e.pki.Root))
	run := func(t *testing.T, stdin string, name string, args ...string) string {
		t.Helper()
		if _, err := exec.LookPath(name); err != nil {
			t.Fatalf("%s not installed: run make deps", name)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Stdin = strings.NewReader(stdin)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if ctx.Err() != nil {
			t.Fatalf("%s hung:\n%s", name, out.String())
		}
		if err != nil && name == "curl" {
			t.Fatalf("%s: %v\n%s", name, err, out.String())
		}
		return out.String()
	}

	t.Run("openssl_s_client", func(t *testing.T) {
		out := run(t, "a LOGIN alice@example.org alice-secret\nb SELECT INBOX\nc LOGOUT\n",
			"openssl", "s_client", "-connect", e.addr, "-servername", "localhost",
			"-cert", certFile, "-cert_chain", certFile, "-key", keyFile, "-CAfile", rootFile,
			"-verify_return_error", "-crlf", "-quiet", "-ign_eof")
		for _, want := range []string{"* OK [CAPABILITY IMAP4rev1", "a OK [CAPABILITY", "* 3 EXISTS", "c OK"} {
			if !strings.Contains(out, want) {
				t.Errorf("s_client output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("openssl_s_client_no_cert", func(t *testing.T) {
		out := run(t, "", "openssl", "s_client", "-connect", e.addr, "-servername", "localhost",
			"-CAfile", rootFile, "-crlf", "-quiet", "-ign_eof")
		if !strings.Contains(out, "* BYE [ALERT] No client certificate") {
			t.Errorf("s_client without a certificate:\n%s", out)
		}
	})
	t.Run("curl_imaps", func(t *testing.T) {
		out := run(t, "", "curl", "-sS", "--max-time", "50",
			"--cert", certFile, "--key", keyFile, "--cacert", rootFile,
			"--user", testenv.Alice.Name+":"+testenv.Alice.Password,
			"imaps://"+e.addr+"/INBOX;MAILINDEX=1")
		if !strings.Contains(out, "Hello alice@example.org, this is message 1.") {
			t.Errorf("curl did not fetch message 1:\n%s", out)
		}
	})
	t.Run("curl_imaps_wrong_password", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "curl", "-sS", "--max-time", "50",
			"--cert", certFile, "--key", keyFile, "--cacert", rootFile,
			"--user", testenv.Alice.Name+":nope", "imaps://"+e.addr+"/INBOX;MAILINDEX=1").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "Login denied") {
			t.Errorf("curl with a wrong password: %v\n%s", err, out)
		}
	})
}

// TestProxyProtocol: a trusted balancer's PROXY v2 header sets the client address (seen
// in the log and by Dovecot); a v1 header is refused.
func TestProxyProtocol(t *testing.T) {
	e := newEnv(t, envOptions{mod: func(o *mtls.Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}})
	dialVia := func(version byte) (*tls.Conn, error) {
		return dialViaProxy(e, e.alice, &proxyproto.Header{
			Version:           version,
			Command:           proxyproto.PROXY,
			TransportProtocol: proxyproto.TCPv4,
			SourceAddr:        &net.TCPAddr{IP: net.ParseIP("198.51.100.23"), Port: 40000},
			DestinationAddr:   &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 993},
		})
	}
	tc, err := dialVia(2)
	if err != nil {
		t.Fatal(err)
	}
	c := newLineConn(t, tc)
	c.line()
	c.send("a LOGIN alice@example.org alice-secret\r\n")
	if got := c.line(); !strings.HasPrefix(got, "a OK") {
		t.Fatalf("login: %q", got)
	}
	if !strings.Contains(e.logs.String(), `"remote_ip":"198.51.100.23"`) {
		t.Errorf("log lacks the proxied client address")
	}
	waitDovecotLog(t, e, "rip=198.51.100.23")
	if tc, err := dialVia(1); err == nil {
		tc.Close()
		t.Fatal("PROXY v1 header accepted")
	}
}

// dialViaProxy connects to the front as a trusted balancer would: header first, then
// the TLS handshake with leaf.
func dialViaProxy(e *env, leaf *testenv.Leaf, h *proxyproto.Header) (*tls.Conn, error) {
	conn, err := net.DialTimeout("tcp", e.addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	if _, err := h.WriteTo(conn); err != nil {
		conn.Close()
		return nil, err
	}
	tc := tls.Client(conn, e.clientTLS(leaf))
	tc.SetDeadline(time.Now().Add(20 * time.Second))
	if err := tc.Handshake(); err != nil {
		conn.Close()
		return nil, err
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}
