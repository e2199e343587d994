package testenv_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/testenv"
)

// TestRunDovecot starts Dovecot the way the demo does (RunDovecot in a directory of
// its own, Stop), plain and with mandatory TLS, and logs in to each.
func TestRunDovecot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("Dovecot tests run as root")
	}
	pki := testenv.NewPKI(t)
	for _, tc := range []struct {
		name     string
		tlsCert  bool
		implicit bool
	}{
		{"plain", false, false},
		{"starttls_required", true, false},
		{"implicit_tls", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "imapgate-rundovecot-")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			o := testenv.DovecotOptions{ImplicitTLS: tc.implicit}
			if tc.tlsCert {
				o.TLSCert = pki.Server(t)
			}
			d, err := testenv.RunDovecot(dir, o) // RunDovecot makes dir itself 0755
			if err != nil {
				t.Fatal(err)
			}
			defer d.Stop()
			c, err := net.DialTimeout("tcp", d.Addr, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			tlsCfg := &tls.Config{RootCAs: pki.Pool(), ServerName: "localhost"}
			if tc.implicit {
				c = tls.Client(c, tlsCfg)
			}
			br := bufio.NewReader(c)
			cmd := func(tag, line string) string {
				t.Helper()
				if _, err := c.Write([]byte(tag + " " + line + "\r\n")); err != nil {
					t.Fatal(err)
				}
				for {
					s, err := br.ReadString('\n')
					if err != nil {
						t.Fatalf("%s: %v\n%s", line, err, d.Log())
					}
					if strings.HasPrefix(s, tag+" ") {
						return strings.TrimSpace(s)
					}
				}
			}
			greet, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if tc.tlsCert && !tc.implicit {
				// Loopback clients are "secured" for Dovecot (and 127.0.0.0/8 is a
				// trusted network), so it would take a plaintext LOGIN here; the
				// test shows the listener speaks STARTTLS with the given certificate.
				if !strings.Contains(greet, "STARTTLS") {
					t.Errorf("greeting %q: want STARTTLS", greet)
				}
				if got := cmd("s", "STARTTLS"); !strings.HasPrefix(got, "s OK") {
					t.Fatalf("STARTTLS: %q", got)
				}
				c = tls.Client(c, tlsCfg)
				br = bufio.NewReader(c)
			}
			if got := cmd("b", "LOGIN alice@example.org alice-secret"); !strings.HasPrefix(got, "b OK") {
				t.Fatalf("LOGIN: %q\n%s", got, d.Log())
			}
			if got := cmd("c", "SELECT INBOX"); !strings.HasPrefix(got, "c OK") {
				t.Fatalf("SELECT: %q", got)
			}
			cmd("d", "LOGOUT")
			if tc.tlsCert {
				d.WaitLog(t, "Login: user=<alice@example.org>", ", TLS")
			}
		})
	}
}

func TestRunDovecotErrors(t *testing.T) {
	if os.Geteuid() != 0 {
		if _, err := testenv.RunDovecot(t.TempDir(), testenv.DovecotOptions{}); !errors.Is(err, testenv.ErrNotRoot) {
			t.Fatalf("RunDovecot as non-root: %v, want ErrNotRoot", err)
		}
		return
	}
	private := filepath.Join(t.TempDir(), "dovecot") // t.TempDir's parents are 0700
	// Another IMAP server on the port asked for: RunDovecot must not take it for its own.
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	go func() {
		for {
			c, err := other.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("* OK [CAPABILITY IMAP4rev1] some other server ready.\r\n"))
			c.Close()
		}
	}()
	taken, err := os.MkdirTemp("", "imapgate-rundovecot-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(taken)
	for _, tc := range []struct {
		name string
		dir  string
		o    testenv.DovecotOptions
		want string
	}{
		{"bad_addr", os.TempDir(), testenv.DovecotOptions{Addr: "localhost"}, "want host:port"},
		{"implicit_without_cert", os.TempDir(), testenv.DovecotOptions{ImplicitTLS: true}, "needs TLSCert"},
		{"private_parent", private, testenv.DovecotOptions{}, "not searchable by the dovecot user"},
		{"addr_taken", taken, testenv.DovecotOptions{Addr: other.Addr().String()}, "is taken: choose another port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := testenv.RunDovecot(tc.dir, tc.o)
			if err == nil {
				d.Stop()
				t.Fatalf("RunDovecot started; want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestDovecotPOP3: with POP3 the same Dovecot serves POP3 for the same users, and takes
// XCLIENT from 127.0.0.0/8 (login_trusted_networks): the front forwards the client's
// address with it, and Dovecot logs that address for the login.
func TestDovecotPOP3(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{POP3: true})
	if d.POP3Addr == "" {
		t.Fatal("no POP3Addr")
	}
	c, err := net.DialTimeout("tcp", d.POP3Addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	line := func() string {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return strings.TrimRight(l, "\r\n")
	}
	if g := line(); !strings.HasPrefix(g, "+OK") {
		t.Fatalf("greeting %q", g)
	}
	// Dovecot 2.3 does not list XCLIENT in CAPA; it takes it from trusted networks.
	fmt.Fprintf(c, "XCLIENT ADDR=192.0.2.7 PORT=4711\r\n")
	if l := line(); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("XCLIENT: %q", l)
	}
	fmt.Fprintf(c, "USER %s\r\n", testenv.Alice.Name)
	if l := line(); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("USER: %q", l)
	}
	fmt.Fprintf(c, "PASS %s\r\n", testenv.Alice.Password)
	if l := line(); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("PASS: %q", l)
	}
	fmt.Fprintf(c, "STAT\r\n")
	if l := line(); !strings.HasPrefix(l, "+OK ") {
		t.Fatalf("STAT: %q", l)
	}
	fmt.Fprintf(c, "QUIT\r\n")
	line()
	d.WaitLog(t, "pop3-login: Info: Login: user=<alice@example.org>", "rip=192.0.2.7")
}
