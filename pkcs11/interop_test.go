package pkcs11

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/testenv"
)

// The interoperability tests enroll on SoftHSM2 through this package, then
// let other PKCS#11 consumers — OpenSC's pkcs11-tool, NSS (what Thunderbird
// uses) and GnuTLS via p11-kit — find and use the key and certificate.

type enrolled struct {
	s   *softToken
	ca  *testCA
	res *EnrollResult
}

// enrollAndRelease enrolls alice and closes our session and module so that
// the outside tools see the token as a fresh process would.
func enrollAndRelease(t *testing.T, kt KeyType) *enrolled {
	t.Helper()
	s := newSoftToken(t)
	ca := newTestCA(t)
	res, err := s.tok.Enroll(context.Background(), EnrollRequest{
		User: "alice@example.org", KeyType: kt, PIN: s.pin(), WriteCACerts: true}, ca.sign)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.tok.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.mod.Close(); err != nil {
		t.Fatal(err)
	}
	return &enrolled{s: s, ca: ca, res: res}
}

// run runs a tool with the token's environment, bounded by timeout(1)
// because tstclnt sometimes lingers after the server closed.
func run(t *testing.T, env []string, stdin string, name string, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s not found: run make deps", name)
	}
	cmd := exec.Command("timeout", append([]string{"30", name}, args...)...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestInteropPKCS11Tool(t *testing.T) {
	e := enrollAndRelease(t, KeyECP256)
	out, err := run(t, e.s.env.Env(), "", "pkcs11-tool", "--module", e.s.env.Module,
		"--token-label", e.s.env.Label, "--login", "--pin", e.s.env.PIN, "--list-objects")
	if err != nil {
		t.Fatalf("pkcs11-tool: %v\n%s", err, out)
	}
	// Blocks start at "<Kind> Object;" lines; collect the ID of each kind.
	ids := map[string][]string{}
	var kind string
	for _, line := range strings.Split(out, "\n") {
		if m := regexp.MustCompile(`^(Certificate|Private Key|Public Key) Object`).FindStringSubmatch(line); m != nil {
			kind = m[1]
		}
		if m := regexp.MustCompile(`^\s+ID:\s+([0-9a-f]+)`).FindStringSubmatch(line); m != nil && kind != "" {
			ids[kind] = append(ids[kind], m[1])
		}
	}
	want := e.res.KeyIDHex()
	for _, k := range []string{"Certificate", "Private Key", "Public Key"} {
		if !contains(ids[k], want) {
			t.Errorf("pkcs11-tool lists no %s object with ID %s:\n%s", k, want, out)
		}
	}
	if !strings.Contains(out, "never extractable") || !strings.Contains(out, "sensitive") {
		t.Errorf("pkcs11-tool does not show the key as sensitive and never extractable:\n%s", out)
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// nssDB makes an NSS database that loads the module and trusts the test root.
func (e *enrolled) nssDB(t *testing.T) string {
	db := testenv.NSSDB(t, e.s.env.Module, e.s.env.Env())
	root := writePEM(t, t.TempDir(), "root.pem", e.ca.root)
	testenv.RunTool(t, e.s.env.Env(), "certutil", "-A", "-d", db, "-n", "imapgate-test-root", "-t", "CT,C,C", "-i", root)
	return db
}

func TestInteropNSSListsUserCert(t *testing.T) {
	e := enrollAndRelease(t, KeyECP256)
	db := e.nssDB(t)
	out := testenv.RunTool(t, e.s.env.Env(), "certutil", "-L", "-d", db, "-h", "all")
	nick := e.s.env.Label + ":" + e.res.Label
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(nick) + `\s+u,u,u\s*$`)
	if !re.MatchString(out) {
		t.Fatalf("NSS does not list %q as a user certificate (u,u,u):\n%s", nick, out)
	}
}

// tlsServer is a Go TLS 1.3 server that requires a client certificate from
// the test CA, like imapgate's front, and reports each verified client.
type tlsServer struct {
	addr    string
	clients chan *x509.Certificate
}

func startTLSServer(t *testing.T, ca *testCA) *tlsServer {
	t.Helper()
	cert, key := ca.serverCert(t)
	pool := ca.pool()
	pool.AddCert(ca.inter) // clients may send the leaf alone
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw, ca.inter.Raw}, PrivateKey: key}},
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	srv := &tlsServer{addr: ln.Addr().String(), clients: make(chan *x509.Certificate, 8)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				tc := c.(*tls.Conn)
				c.SetDeadline(time.Now().Add(20 * time.Second))
				if err := tc.Handshake(); err != nil {
					t.Logf("server: handshake: %v", err)
					return
				}
				st := tc.ConnectionState()
				if st.Version != tls.VersionTLS13 || len(st.VerifiedChains) == 0 {
					return
				}
				leaf := st.PeerCertificates[0]
				srv.clients <- leaf
				// Read the request head, then answer and close.
				r := bufio.NewReader(tc)
				for {
					line, err := r.ReadString('\n')
					if err != nil || strings.TrimSpace(line) == "" {
						break
					}
				}
				fmt.Fprintf(tc, "HTTP/1.0 200 OK\r\n\r\nhello %s\n", leaf.Subject.CommonName)
			}(c)
		}
	}()
	return srv
}

func (s *tlsServer) port() string {
	_, p, _ := net.SplitHostPort(s.addr)
	return p
}

// expectClient waits for the server to have verified the enrolled cert.
func (s *tlsServer) expectClient(t *testing.T, want *x509.Certificate, clientOut string) {
	t.Helper()
	select {
	case got := <-s.clients:
		if !got.Equal(want) {
			t.Fatalf("server verified %v, want the enrolled certificate %v", got.Subject, want.Subject)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the server verified no client certificate; client said:\n%s", clientOut)
	}
	if !strings.Contains(clientOut, "hello alice@example.org") {
		t.Errorf("client did not get the answer:\n%s", clientOut)
	}
}

func TestInteropTLS13(t *testing.T) {
	for _, kt := range []KeyType{KeyECP256, KeyRSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			e := enrollAndRelease(t, kt)
			srv := startTLSServer(t, e.ca)
			const req = "GET / HTTP/1.0\r\n\r\n"

			t.Run("nss-tstclnt", func(t *testing.T) {
				db := e.nssDB(t)
				reqFile := filepath.Join(t.TempDir(), "req")
				if err := os.WriteFile(reqFile, []byte(req), 0o600); err != nil {
					t.Fatal(err)
				}
				// -A: read the request from a file; with stdin tstclnt lingers after the server closes.
				out, err := run(t, e.s.env.Env(), "", "tstclnt", "-A", reqFile, "-h", "127.0.0.1", "-p", srv.port(), "-d", db,
					"-n", e.s.env.Label+":"+e.res.Label, "-w", e.s.env.PIN, "-V", "tls1.3:tls1.3")
				if err != nil && !strings.Contains(out, "hello") {
					t.Fatalf("tstclnt: %v\n%s", err, out)
				}
				srv.expectClient(t, e.res.Certificate, out)
			})

			t.Run("nss-tstclnt-wrong-PIN", func(t *testing.T) {
				// What a Thunderbird user with a wrong PIN gets: NSS cannot
				// use the key, sends no certificate, the server refuses.
				db := e.nssDB(t)
				out, err := run(t, e.s.env.Env(), "", "tstclnt", "-Q", "-h", "127.0.0.1", "-p", srv.port(), "-d", db,
					"-n", e.s.env.Label+":"+e.res.Label, "-w", "000000", "-V", "tls1.3:tls1.3")
				if err == nil && strings.Contains(out, "hello") {
					t.Fatalf("tstclnt got through with a wrong PIN:\n%s", out)
				}
				select {
				case c := <-srv.clients:
					t.Fatalf("server verified %v although the PIN was wrong", c.Subject)
				case <-time.After(300 * time.Millisecond):
				}
			})

			t.Run("gnutls-cli", func(t *testing.T) {
				root := writePEM(t, t.TempDir(), "root.pem", e.ca.root)
				uri := "pkcs11:token=" + e.s.env.Label + ";id=" + pctEncode(e.res.KeyID)
				env := append(e.s.env.Env(), "GNUTLS_PIN="+e.s.env.PIN)
				out, err := run(t, env, req, "gnutls-cli", "--x509cafile", root,
					"--x509certfile", uri+";type=cert", "--x509keyfile", uri+";type=private",
					"--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.3", "-p", srv.port(), "127.0.0.1")
				if err != nil && !strings.Contains(out, "hello") {
					t.Fatalf("gnutls-cli: %v\n%s", err, out)
				}
				srv.expectClient(t, e.res.Certificate, out)
			})
		})
	}
}

func pctEncode(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		fmt.Fprintf(&sb, "%%%02X", c)
	}
	return sb.String()
}

// TestSignerAsTLSClientKey uses the token key as tls.Certificate.PrivateKey
// in a Go client (RSA goes through PSS, as TLS 1.3 demands), with several
// handshakes at once to exercise the Signer's locking.
func TestSignerAsTLSClientKey(t *testing.T) {
	for _, kt := range []KeyType{KeyECP256, KeyRSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			s := newSoftToken(t)
			ca := newTestCA(t)
			res, err := s.tok.Enroll(context.Background(), EnrollRequest{User: "alice@example.org", KeyType: kt, PIN: s.pin()}, ca.sign)
			if err != nil {
				t.Fatal(err)
			}
			k, err := s.tok.FindKey(res.KeyID)
			if err != nil {
				t.Fatal(err)
			}
			srv := startTLSServer(t, ca)
			cfg := &tls.Config{
				RootCAs:      ca.pool(),
				ServerName:   "127.0.0.1",
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{{Certificate: [][]byte{res.Certificate.Raw, ca.inter.Raw}, PrivateKey: k.Signer()}},
			}
			const n = 4
			errs := make(chan error, n)
			for range n {
				go func() {
					c, err := tls.Dial("tcp", srv.addr, cfg)
					if err != nil {
						errs <- err
						return
					}
					defer c.Close()
					fmt.Fprint(c, "GET / HTTP/1.0\r\n\r\n")
					var buf strings.Builder
					_, err = bufio.NewReader(c).WriteTo(&buf)
					if err == nil && !strings.Contains(buf.String(), "hello alice@example.org") {
						err = fmt.Errorf("answer %q", buf.String())
					}
					errs <- err
				}()
			}
			for range n {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
				srv.expectClient(t, res.Certificate, "hello alice@example.org")
			}
		})
	}
}
