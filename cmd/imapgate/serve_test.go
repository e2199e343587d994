package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imapgate/imapgate/testenv"
)

// served is a running `imapgate serve` binary whose output lines are read as
// they come.
type served struct {
	cmd   *exec.Cmd
	lines chan string // stdout and stderr, line by line
	seen  []string
	done  chan error
}

func startServe(t *testing.T, env []string, args ...string) *served {
	t.Helper()
	s := &served{cmd: exec.Command(buildBinary(t), append([]string{"serve"}, args...)...),
		lines: make(chan string, 1024), done: make(chan error, 1)}
	s.cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	s.cmd.Stdout, s.cmd.Stderr = pw, pw
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	go func() { err := s.cmd.Wait(); pw.Close(); s.done <- err }()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

// waitFor returns the first line (from now on, or already seen) containing want.
func (s *served) waitFor(t *testing.T, want string) string {
	t.Helper()
	for _, l := range s.seen {
		if strings.Contains(l, want) {
			return l
		}
	}
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				t.Fatalf("serve ended before printing %q; it printed:\n%s", want, strings.Join(s.seen, "\n"))
			}
			s.seen = append(s.seen, l)
			if strings.Contains(l, want) {
				return l
			}
		case <-timeout:
			t.Fatalf("serve did not print %q within 60 s; it printed:\n%s", want, strings.Join(s.seen, "\n"))
		}
	}
}

// stop sends sig and returns the exit code once the process has ended.
func (s *served) stop(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	s.cmd.Process.Signal(sig)
	go func() {
		for l := range s.lines {
			_ = l
		}
	}()
	err := <-s.done
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

// TestServe runs the real binary: the first start sets DIR up; the CA, the
// front and the help desk UI answer on their 127.0.0.1 ports; the front's
// certificate comes from its own CA (serverAuth, CA:FALSE); a user certificate
// from that CA plus the password reaches Dovecot and no certificate is refused;
// SIGHUP reloads the front; SIGTERM ends everything with status 0; a second
// start reuses DIR and refuses first-start flags.
func TestServe(t *testing.T) {
	bin := buildBinary(t)
	dove := testenv.StartDovecot(t, testenv.DovecotOptions{})
	hsm := testenv.SoftHSM(t)
	dir := filepath.Join(t.TempDir(), "gate")
	pw := filepath.Join(t.TempDir(), "pw")
	testenv.WriteFile(t, pw, []byte("serve-test-password\n"))
	port := func() string { return "127.0.0.1:" + itoa(testenv.FreePort(t)) }
	api, crlAddr, front, metrics, ui := port(), port(), port(), port(), port()
	args := []string{"--dir", dir, "--password-file", pw, "--ca-url", "https://" + api, "--crl-listen", crlAddr,
		"--front-listen", front, "--metrics-listen", metrics, "--ui-listen", ui, "--backend", dove.Addr,
		"--module", hsm.Module, "--crl-poll", "1s"}
	s := startServe(t, hsm.Env(), args...)
	s.waitFor(t, "created in "+dir)
	login := s.waitFor(t, "imapgate enroll-ui: open ")
	s.waitFor(t, `"msg":"front listening"`)
	waitUp(t, "http://"+crlAddr+"/healthz")
	waitUp(t, "http://"+metrics+"/metrics")

	// The UI: its access link logs in (a redirect to its pages, not an error).
	link := strings.TrimSpace(login[strings.Index(login, "http://"):])
	if !strings.HasPrefix(link, "http://"+ui+"/") {
		t.Fatalf("UI link %q, want one on %s", link, ui)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		t.Fatalf("UI login link: %s", resp.Status)
	}

	// The front's certificate: issued by the intermediate, for 127.0.0.1, an end entity.
	roots := x509.NewCertPool()
	rootPEM, err := os.ReadFile(filepath.Join(dir, "root_ca.crt"))
	if err != nil || !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("root_ca.crt: %v", err)
	}
	userCert := issueUserCert(t, bin, dir, "https://"+api, "alice@example.org")
	conn, err := tls.Dial("tcp", front, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{userCert}})
	if err != nil {
		t.Fatalf("front TLS with the CA's root: %v", err)
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	if leaf.IsCA || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("front certificate: IsCA %v, EKU %v; want an end entity with serverAuth only", leaf.IsCA, leaf.ExtKeyUsage)
	}
	r := bufio.NewReader(conn)
	readLine(t, r) // greeting
	conn.Write([]byte("a1 LOGIN alice@example.org " + dove.Users[0].Password + "\r\n"))
	if l := readUntilTag(t, r, "a1 "); !strings.HasPrefix(l, "a1 OK") {
		t.Errorf("LOGIN through the front: %q", l)
	}
	conn.Close()

	bare, err := tls.Dial("tcp", front, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err == nil {
		l, _ := bufio.NewReader(bare).ReadString('\n')
		bare.Close()
		if !strings.Contains(l, "BYE") {
			t.Errorf("no client certificate: %q, want a BYE", l)
		}
	}

	s.cmd.Process.Signal(syscall.SIGHUP)
	s.waitFor(t, `"msg":"front reloaded"`)
	if code := s.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d, want 0", code)
	}

	// Second start: DIR is kept (same root), first-start flags refused.
	s2 := startServe(t, hsm.Env(), "--dir", dir, "--password-file", pw)
	s2.waitFor(t, `"msg":"front listening"`)
	for _, l := range s2.seen {
		if strings.Contains(l, "created in") {
			t.Errorf("second start created the CA again: %s", l)
		}
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "root_ca.crt")); !bytes.Equal(again, rootPEM) {
		t.Error("second start changed the root")
	}
	if code := s2.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("second start, SIGTERM: exit %d", code)
	}
	out, err := exec.Command(bin, append([]string{"serve"}, args...)...).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "first start only") {
		t.Errorf("first-start flags on a set-up DIR: %v %s, want exit 2", err, out)
	}
}

// issueUserCert has the CA of dir sign a software key for user through the
// CLI, with the admin credential ca init wrote.
func issueUserCert(t *testing.T, bin, dir, caURL, user string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{EmailAddresses: []string{user}}, key)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	csr, chain := filepath.Join(work, "csr.pem"), filepath.Join(work, "chain.pem")
	testenv.WriteFile(t, csr, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if out, err := exec.Command(bin, "cert", "sign", "--csr", csr, "--user", user, "--out", chain,
		"--ca", caURL, "--cred", filepath.Join(dir, "admin")).CombinedOutput(); err != nil {
		t.Fatalf("cert sign: %v\n%s", err, out)
	}
	chainPEM, err := os.ReadFile(chain)
	if err != nil {
		t.Fatal(err)
	}
	var c tls.Certificate
	for rest := chainPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c.Certificate = append(c.Certificate, b.Bytes)
	}
	c.PrivateKey = key
	return c
}

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	l, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v (got %q)", err, l)
	}
	return l
}

func readUntilTag(t *testing.T, r *bufio.Reader, tag string) string {
	t.Helper()
	for {
		if l := readLine(t, r); strings.HasPrefix(l, tag) {
			return l
		}
	}
}

// TestServePublicCAURL: with a --ca-url naming a public host (here one that
// does not resolve) the CA still listens on 127.0.0.1, and the in-process
// help desk UI reaches it there, checking its certificate for the URL's host.
// The UI's access link is also in DIR/serve/enroll-ui-link (0600).
func TestServePublicCAURL(t *testing.T) {
	dove := testenv.StartDovecot(t, testenv.DovecotOptions{})
	hsm := testenv.SoftHSM(t)
	dir := filepath.Join(t.TempDir(), "gate")
	pw := filepath.Join(t.TempDir(), "pw")
	testenv.WriteFile(t, pw, []byte("serve-test-password\n"))
	port := func() string { return "127.0.0.1:" + itoa(testenv.FreePort(t)) }
	crlAddr, front, metrics, ui := port(), port(), port(), port()
	s := startServe(t, hsm.Env(), "--dir", dir, "--password-file", pw, "--ca-url", "https://gate.invalid:"+itoa(testenv.FreePort(t)),
		"--crl-listen", crlAddr, "--front-listen", front, "--metrics-listen", metrics, "--ui-listen", ui, "--backend", dove.Addr,
		"--module", hsm.Module, "--crl-poll", "1s")
	login := s.waitFor(t, "imapgate enroll-ui: open ")
	link := strings.TrimSpace(login[strings.Index(login, "http://"):])
	// The link is in a file only the gate's user reads, too.
	lf := filepath.Join(dir, "serve", "enroll-ui-link")
	if b, err := os.ReadFile(lf); err != nil || strings.TrimSpace(string(b)) != link {
		t.Fatalf("link file %s: %q %v, want %q", lf, b, err, link)
	}
	if st, _ := os.Stat(lf); st.Mode().Perm() != 0o600 {
		t.Fatalf("link file mode %v, want 0600", st.Mode().Perm())
	}
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar}
	resp, err := cl.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = cl.Get("http://" + ui + "/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "reachable at https://gate.invalid") || strings.Contains(string(body), "unreachable") {
		t.Fatalf("the UI's Status page: %d\n%s", resp.StatusCode, body)
	}
}
