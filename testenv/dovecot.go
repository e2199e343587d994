package testenv

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DovecotUser is a mailbox in the private Dovecot.
type DovecotUser struct {
	Name     string // login, e.g. alice@example.org
	Password string
}

// Dovecot is a private Dovecot IMAP server (plain IMAP on 127.0.0.1 by default, or TLS
// with DovecotOptions.TLSCert), with a passwd-file of users and a maildir holding a few
// messages each.
type Dovecot struct {
	Addr  string // host:port, 127.0.0.1:port unless DovecotOptions.Addr says otherwise
	Dir   string
	Users []DovecotUser
	// POP3Addr is the plain POP3 listener's host:port (with DovecotOptions.POP3),
	// else empty. It takes XCLIENT from 127.0.0.0/8 (login_trusted_networks).
	POP3Addr string
	// SASLSocket is Dovecot's auth socket for Postfix (with
	// DovecotOptions.Submission), else empty.
	SASLSocket string
	uid, gid   int // owner of the mailboxes (Postfix delivers as them)
	cmd        *exec.Cmd
	done       chan struct{}
	once       sync.Once

	greeting string // Dovecot's login_greeting, unique per start
}

// DovecotOptions tune the private Dovecot. The zero value is plain IMAP on a free
// 127.0.0.1 port with Alice and Bob.
type DovecotOptions struct {
	// Users default to alice@example.org/alice-secret and bob@example.org/bob-secret.
	Users []DovecotUser
	// ManyClients raises process and client limits for benchmarks with thousands of
	// idle sessions (imap processes then serve many clients each).
	ManyClients bool
	// Addr is the host:port to listen on; default a free port on 127.0.0.1.
	Addr string
	// TLSCert, when set, is Dovecot's server certificate (chain and key, e.g. from
	// PKI.Server), with ssl = required and TLS 1.2 or later: the listener offers
	// STARTTLS or, with ImplicitTLS, speaks TLS from the first byte. Nil: plain IMAP
	// without TLS, as before. Note that Dovecot counts loopback clients and those on
	// login_trusted_networks (127.0.0.0/8 here) as secured and still takes a plaintext
	// LOGIN from them after STARTTLS was skipped; its log says ", TLS" on a login that
	// used TLS, which is what tests should check.
	TLSCert *Leaf
	// ImplicitTLS makes the listener imaps-style (TLS from the first byte) instead of
	// STARTTLS. Only with TLSCert.
	ImplicitTLS bool
	// ClientCA, with TLSCert, makes Dovecot ask for a client certificate chaining
	// to it (ssl_verify_client_cert) and refuse logins without a valid one
	// (auth_ssl_require_client_cert): a backend that trusts only the front.
	ClientCA *x509.Certificate
	// POP3 adds Dovecot's POP3 server (Debian dovecot-pop3d) on another free port of
	// the same host, plain (its TLS settings follow TLSCert like IMAP's, STLS only),
	// serving the same users and mailboxes: Dovecot.POP3Addr.
	POP3 bool
	// Submission adds an auth socket for Postfix's SASL (smtpd_sasl_type = dovecot):
	// StartPostfix, which delivers into the users' maildirs itself.
	Submission bool
}

// Default test users.
var (
	Alice = DovecotUser{Name: "alice@example.org", Password: "alice-secret"}
	Bob   = DovecotUser{Name: "bob@example.org", Password: "bob-secret"}
)

// ErrNotRoot is returned by RunDovecot when the process is not root.
var ErrNotRoot = errors.New("testenv: dovecot needs root (it switches to the dovecot and dovenull users): run as root, e.g. with sudo")

// StartDovecot starts a private Dovecot and stops it when the test ends. It needs root
// (to switch to the dovecot and dovenull users; the test is skipped otherwise) and
// dovecot-imapd (make deps).
func StartDovecot(t testing.TB, o DovecotOptions) *Dovecot {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("testenv: Dovecot tests run as root (it switches to the dovecot/dovenull users)")
	}
	// Not t.TempDir: its parents are 0700 and the imap processes run as dovecot.
	dir, err := os.MkdirTemp("", "imapgate-dovecot-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d, err := RunDovecot(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return d
}

// RunDovecot starts a private Dovecot that keeps its config, state, log and mail in dir
// (created if missing, made searchable by all: the imap processes run as the dovecot
// user, so every parent of dir must be searchable by others too, as /tmp is). It
// returns once the server greets; the caller stops it with Stop and removes dir. It
// needs root and Dovecot's IMAP server (Debian dovecot-imapd, installed by make deps);
// an error says which is missing.
func RunDovecot(dir string, o DovecotOptions) (*Dovecot, error) {
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		bin = "/usr/sbin/dovecot"
		if _, err := os.Stat(bin); err != nil {
			return nil, errors.New("testenv: dovecot not found: install it with `make deps` (Debian packages dovecot-core and dovecot-imapd)")
		}
	}
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	mailUser, err := user.Lookup("dovecot")
	if err != nil {
		return nil, fmt.Errorf("testenv: user dovecot missing: install dovecot-core with `make deps`: %w", err)
	}
	if _, err := user.Lookup("dovenull"); err != nil {
		return nil, fmt.Errorf("testenv: user dovenull missing: install dovecot-core with `make deps`: %w", err)
	}
	uid, _ := strconv.Atoi(mailUser.Uid)
	gid, _ := strconv.Atoi(mailUser.Gid)
	if len(o.Users) == 0 {
		o.Users = []DovecotUser{Alice, Bob}
	}
	if o.ImplicitTLS && o.TLSCert == nil {
		return nil, errors.New("testenv: DovecotOptions.ImplicitTLS needs TLSCert (the server certificate, e.g. PKI.Server)")
	}
	host, port := "127.0.0.1", 0
	if o.Addr != "" {
		h, p, err := net.SplitHostPort(o.Addr)
		n, perr := strconv.Atoi(p)
		if err != nil || perr != nil || n <= 0 || n > 65535 {
			return nil, fmt.Errorf("testenv: DovecotOptions.Addr %q: want host:port, e.g. 127.0.0.1:1143", o.Addr)
		}
		if h != "" {
			host = h
		}
		port = n
	}

	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("testenv: dovecot dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("testenv: dovecot dir: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("testenv: dovecot dir: %w", err)
	}
	if err := searchable(dir); err != nil {
		return nil, err
	}
	for _, d := range []string{"run", "state", "mail"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("testenv: dovecot dir: %w", err)
		}
	}
	var passwd strings.Builder
	for _, u := range o.Users {
		fmt.Fprintf(&passwd, "%s:{PLAIN}%s::::::\n", u.Name, u.Password)
		if err := seedMaildir(filepath.Join(dir, "mail", u.Name), u.Name, uid, gid); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte(passwd.String()), 0o644); err != nil {
		return nil, fmt.Errorf("testenv: dovecot passwd file: %w", err)
	}
	os.Chmod(filepath.Join(dir, "passwd"), 0o644) // an existing file keeps its old mode

	ssl := "ssl = no\n"
	if o.TLSCert != nil {
		if ssl, err = writeDovecotTLS(dir, o.TLSCert); err != nil {
			return nil, err
		}
		if o.ClientCA != nil {
			caFile := filepath.Join(dir, "client-ca.pem")
			if err := os.WriteFile(caFile, CertPEM(o.ClientCA), 0o644); err != nil {
				return nil, fmt.Errorf("testenv: dovecot client CA: %w", err)
			}
			// ssl_require_crl = no: Dovecot otherwise wants a CRL for every CA in
			// the chain, which this fixture does not publish.
			ssl += fmt.Sprintf("ssl_ca = <%s\nssl_verify_client_cert = yes\nssl_require_crl = no\nauth_ssl_require_client_cert = yes\n", caFile)
		}
	} else if o.ClientCA != nil {
		return nil, errors.New("testenv: DovecotOptions.ClientCA needs TLSCert")
	}
	extra := ssl
	if o.ManyClients {
		extra += manyClients
	}
	pop3Port := 0
	if o.POP3 {
		if _, err := os.Stat("/usr/lib/dovecot/pop3-login"); err != nil {
			return nil, errors.New("testenv: DovecotOptions.POP3 needs Dovecot's POP3 server: install it with `make deps` (Debian package dovecot-pop3d)")
		}
		if pop3Port, err = freeLoopbackPort(); err != nil {
			return nil, err
		}
		extra += fmt.Sprintf(pop3Conf, host, pop3Port)
		if o.ManyClients {
			extra += manyClientsPOP3
		}
	}
	if o.Submission {
		extra += submissionConf
	}
	pop3 := func(d *Dovecot, err error) (*Dovecot, error) {
		if d != nil && pop3Port != 0 {
			d.POP3Addr = net.JoinHostPort(host, strconv.Itoa(pop3Port))
		}
		if d != nil && o.Submission {
			d.SASLSocket, d.uid, d.gid = filepath.Join(dir, "run", "auth-postfix"), uid, gid
		}
		return d, err
	}
	if port != 0 {
		d, err := pop3(launchDovecot(bin, dir, host, port, uid, gid, o.ImplicitTLS, extra, o.Users))
		if err != nil && strings.Contains(err.Error(), "in use") {
			return nil, fmt.Errorf("%w\n(DovecotOptions.Addr %s is taken: choose another port)", err, o.Addr)
		}
		return d, err
	}
	// The free port may be taken by someone else before Dovecot binds it (parallel test
	// packages): then Dovecot exits at once and we try another one.
	for attempt := 1; ; attempt++ {
		port, err := freeLoopbackPort()
		if err != nil {
			return nil, err
		}
		d, err := pop3(launchDovecot(bin, dir, host, port, uid, gid, o.ImplicitTLS, extra, o.Users))
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "in use") {
			return d, err
		}
	}
}

// pop3Conf adds the POP3 listener (host, port). A later "protocols" line overrides
// the template's.
const pop3Conf = `
protocols = imap pop3
pop3_uidl_format = %%08Xu%%08Xv
service pop3-login {
  inet_listener pop3 {
    address = %s
    port = %d
  }
  inet_listener pop3s {
    port = 0
  }
}
`

// submissionConf adds the auth socket Postfix uses (relative to base_dir), open to
// all: this is a private test instance.
const submissionConf = `
service auth {
  unix_listener auth-postfix {
    mode = 0666
  }
}
`

const manyClients = `
default_process_limit = 100
default_client_limit = 10000
default_vsz_limit = 1G
service imap {
  service_count = 0
  process_limit = 64
  client_limit = 200
}
service imap-login {
  service_count = 0
  process_min_avail = 2
  client_limit = 5000
}
service anvil {
  client_limit = 20000
}
service auth {
  client_limit = 20000
}
mail_max_userip_connections = 100000
`

// manyClientsPOP3 is manyClients for POP3: without it every POP3 login forks a pop3
// process (service_count 1), which a benchmark would measure instead of the login.
const manyClientsPOP3 = `
service pop3 {
  service_count = 0
  process_limit = 64
  client_limit = 200
}
service pop3-login {
  service_count = 0
  process_min_avail = 2
  client_limit = 5000
}
`

// writeDovecotTLS writes the server chain and key for Dovecot (read by its config
// process, as root) and returns the settings that require TLS.
func writeDovecotTLS(dir string, l *Leaf) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(l.Key)
	if err != nil {
		return "", fmt.Errorf("testenv: dovecot TLS key: %w", err)
	}
	certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certFile, CertPEM(l.Chain...), 0o644); err != nil {
		return "", fmt.Errorf("testenv: dovecot TLS certificate: %w", err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return "", fmt.Errorf("testenv: dovecot TLS key: %w", err)
	}
	return fmt.Sprintf("ssl = required\nssl_cert = <%s\nssl_key = <%s\nssl_min_protocol = TLSv1.2\n", certFile, keyFile), nil
}

// searchable checks that the dovecot user can reach dir: every parent must be
// searchable by others.
func searchable(dir string) error {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("testenv: dovecot dir: %w", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("testenv: dovecot dir %s: its parent %s (mode %v) is not searchable by the dovecot user: chmod o+x %s, or use a directory whose parents are (one made by os.MkdirTemp(\"\", …) itself is fine)", dir, p, fi.Mode().Perm(), p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// launchDovecot writes the config for host:port (extra holds the ssl settings and
// any limits) and starts Dovecot; it returns once
// the server greets, or an error (with Dovecot's log) if it exits first or never greets.
func launchDovecot(bin, dir, host string, port, uid, gid int, implicitTLS bool, extra string, users []DovecotUser) (*Dovecot, error) {
	// The probe looks for this greeting, so that another server that holds the port
	// (and answers IMAP) is not taken for ours.
	var tok [6]byte
	rand.Read(tok[:])
	greeting := "imapgate test Dovecot " + hex.EncodeToString(tok[:]) + " ready."
	listenerSSL := "no"
	if implicitTLS {
		listenerSSL = "yes"
	}
	conf := fmt.Sprintf(`# Written by imapgate testenv; removed with its directory.
protocols = imap
listen = %[6]s
base_dir = %[1]s/run
state_dir = %[1]s/state
instance_name = imapgate-test-%[2]d
log_path = %[1]s/dovecot.log
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
login_greeting = %[8]s
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:%[1]s/mail/%%u
passdb {
  driver = passwd-file
  args = scheme=PLAIN %[1]s/passwd
}
userdb {
  driver = static
  args = uid=%[3]d gid=%[4]d home=%[1]s/mail/%%u
}
service imap-login {
  inet_listener imap {
    address = %[6]s
    port = %[2]d
    ssl = %[7]s
  }
  inet_listener imaps {
    port = 0
  }
}
service stats {
  inet_listener http {
    port = 0
  }
}
%[5]s`, dir, port, uid, gid, extra, host, listenerSSL, greeting)
	confPath := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("testenv: dovecot config: %w", err)
	}
	os.Chmod(confPath, 0o644)
	os.Remove(filepath.Join(dir, "dovecot.log")) // a retry starts with a fresh log

	cmd := exec.Command(bin, "-F", "-c", confPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := os.Create(filepath.Join(dir, "dovecot.stdout"))
	if err != nil {
		return nil, fmt.Errorf("testenv: dovecot: %w", err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("testenv: start dovecot: %w", err)
	}
	d := &Dovecot{Addr: net.JoinHostPort(host, strconv.Itoa(port)), Dir: dir, Users: users, cmd: cmd, done: make(chan struct{}), greeting: greeting}
	go func() { cmd.Wait(); out.Close(); close(d.done) }()

	// Wait for the real greeting (generous: a loaded CI machine is slow to fork).
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-d.done:
			return nil, fmt.Errorf("testenv: dovecot exited early:\n%s", d.Log())
		default:
		}
		err := d.probe(implicitTLS)
		if err == nil {
			return d, nil
		}
		if errors.Is(err, errNotOurs) {
			d.Stop()
			return nil, fmt.Errorf("testenv: another server answers on %s (address already in use)", d.Addr)
		}
		if time.Now().After(deadline) {
			d.Stop()
			return nil, fmt.Errorf("testenv: dovecot on %s not ready after 60s: %v\n%s", d.Addr, err, d.Log())
		}
		select {
		case <-d.done:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

var errNotOurs = errors.New("greeting from another server")

// probe waits for the greeting with CAPABILITY. Over implicit TLS it does not verify
// the certificate: it only asks whether Dovecot is up; the code under test verifies.
func (d *Dovecot) probe(implicitTLS bool) error {
	c, err := net.DialTimeout("tcp", d.Addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if implicitTLS {
		c = tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	}
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.Contains(line, "[CAPABILITY") {
			fmt.Fprintf(c, "p LOGOUT\r\n")
			if !strings.Contains(line, d.greeting) {
				return errNotOurs
			}
			return nil
		}
	}
}

// Log returns Dovecot's log so far.
func (d *Dovecot) Log() string {
	var b []byte
	for _, f := range []string{"dovecot.log", "dovecot.stdout"} {
		data, _ := os.ReadFile(filepath.Join(d.Dir, f))
		b = append(b, data...)
	}
	return string(b)
}

// Stop ends Dovecot (SIGTERM, then SIGKILL to its process group after 15s) and waits
// for it. It leaves the directory alone; calling it again does nothing.
func (d *Dovecot) Stop() {
	d.once.Do(func() {
		if d.cmd.Process == nil {
			return
		}
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(15 * time.Second):
			syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
			<-d.done
		}
	})
}

// Message i of the seeded mailbox; tests fetch these back.
func Message(user string, i int) string {
	return fmt.Sprintf("From: postmaster@example.org\r\nTo: %s\r\nSubject: test message %d\r\nDate: Mon, 02 Nov 2026 10:00:0%d +0000\r\nMessage-ID: <%d.%s@example.org>\r\n\r\nHello %s, this is message %d.\r\n", user, i, i, i, strings.ReplaceAll(user, "@", "."), user, i)
}

// seedMaildir creates a maildir with three messages in new/, owned by the mail user.
func seedMaildir(root, user string, uid, gid int) error {
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, sub), 0o700); err != nil {
			return fmt.Errorf("testenv: maildir of %s: %w", user, err)
		}
	}
	for i := 1; i <= 3; i++ {
		name := filepath.Join(root, "new", fmt.Sprintf("17000000%02d.M%dP1.imapgate", i, i))
		if err := os.WriteFile(name, []byte(Message(user, i)), 0o600); err != nil {
			return fmt.Errorf("testenv: maildir of %s: %w", user, err)
		}
	}
	filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			os.Chown(p, uid, gid)
		}
		return nil
	})
	os.Chown(filepath.Dir(root), uid, gid)
	return nil
}

// freeLoopbackPort finds a free TCP port on 127.0.0.1 (a small race with other
// processes is accepted; Dovecot fails loudly if it loses it, and RunDovecot retries).
func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("testenv: free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// WaitLog waits up to 30 s until Dovecot's log has a line containing all of
// parts, and fails the test with the log otherwise.
func (d *Dovecot) WaitLog(t testing.TB, parts ...string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
	lines:
		for _, line := range strings.Split(d.Log(), "\n") {
			for _, p := range parts {
				if !strings.Contains(line, p) {
					continue lines
				}
			}
			return
		}
	}
	t.Fatalf("Dovecot's log has no line with %q:\n%s", parts, d.Log())
}
