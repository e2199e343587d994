package testenv

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DovecotUser is a mailbox in the private Dovecot.
type DovecotUser struct {
	Name     string // login, e.g. alice@example.org
	Password string
}

// Dovecot is a private Dovecot IMAP server on 127.0.0.1 (plain IMAP, no TLS), with a
// passwd-file of users and a maildir holding a few messages each.
type Dovecot struct {
	Addr  string // 127.0.0.1:port
	Dir   string
	Users []DovecotUser
	cmd   *exec.Cmd
	done  chan struct{}
}

// DovecotOptions tune the private Dovecot.
type DovecotOptions struct {
	// Users default to alice@example.org/alice-secret and bob@example.org/bob-secret.
	Users []DovecotUser
	// ManyClients raises process and client limits for benchmarks with thousands of
	// idle sessions (imap processes then serve many clients each).
	ManyClients bool
}

// Default test users.
var (
	Alice = DovecotUser{Name: "alice@example.org", Password: "alice-secret"}
	Bob   = DovecotUser{Name: "bob@example.org", Password: "bob-secret"}
)

// StartDovecot starts a private Dovecot and stops it when the test ends. It needs root
// (to switch to the dovecot and dovenull users) and dovecot-imapd (make deps).
func StartDovecot(t testing.TB, o DovecotOptions) *Dovecot {
	t.Helper()
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		bin = "/usr/sbin/dovecot"
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("testenv: dovecot not found: install it with `make deps` (Debian package dovecot-imapd)")
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("testenv: Dovecot tests run as root (it switches to the dovecot/dovenull users)")
	}
	mailUser, err := user.Lookup("dovecot")
	if err != nil {
		t.Fatalf("testenv: user dovecot missing: install dovecot-core (make deps): %v", err)
	}
	if _, err := user.Lookup("dovenull"); err != nil {
		t.Fatalf("testenv: user dovenull missing: install dovecot-core (make deps): %v", err)
	}
	uid, _ := strconv.Atoi(mailUser.Uid)
	gid, _ := strconv.Atoi(mailUser.Gid)
	if len(o.Users) == 0 {
		o.Users = []DovecotUser{Alice, Bob}
	}

	// Not t.TempDir: its parents are 0700 and the imap processes run as dovecot.
	dir, err := os.MkdirTemp("", "imapgate-dovecot-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	for _, d := range []string{"run", "state", "mail"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	var passwd strings.Builder
	for _, u := range o.Users {
		fmt.Fprintf(&passwd, "%s:{PLAIN}%s::::::\n", u.Name, u.Password)
		seedMaildir(t, filepath.Join(dir, "mail", u.Name), u.Name, uid, gid)
	}
	WriteFile(t, filepath.Join(dir, "passwd"), []byte(passwd.String()))
	os.Chmod(filepath.Join(dir, "passwd"), 0o644)

	limits := ""
	if o.ManyClients {
		limits = `
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
	}
	// The free port may be taken by someone else before Dovecot binds it (parallel test
	// packages): then Dovecot exits at once and we try another one.
	for attempt := 1; ; attempt++ {
		d, err := launchDovecot(t, bin, dir, freePort(t), uid, gid, limits, o.Users)
		if err == nil {
			return d
		}
		if attempt == 3 || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("testenv: %v", err)
		}
		t.Logf("testenv: dovecot: %v; retrying on another port", err)
	}
}

// launchDovecot writes the config for port and starts Dovecot; it returns once the
// server greets, or an error (with Dovecot's log) if it exits first.
func launchDovecot(t testing.TB, bin, dir string, port, uid, gid int, limits string, users []DovecotUser) (*Dovecot, error) {
	conf := fmt.Sprintf(`# Written by imapgate testenv for one test; removed afterwards.
protocols = imap
listen = 127.0.0.1
base_dir = %[1]s/run
state_dir = %[1]s/state
instance_name = imapgate-test-%[2]d
log_path = %[1]s/dovecot.log
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
ssl = no
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
    address = 127.0.0.1
    port = %[2]d
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
%[5]s`, dir, port, uid, gid, limits)
	confPath := filepath.Join(dir, "dovecot.conf")
	WriteFile(t, confPath, []byte(conf))
	os.Chmod(confPath, 0o644)
	os.Remove(filepath.Join(dir, "dovecot.log")) // a retry starts with a fresh log

	cmd := exec.Command(bin, "-F", "-c", confPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := os.Create(filepath.Join(dir, "dovecot.stdout"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start dovecot: %w", err)
	}
	d := &Dovecot{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir, Users: users, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); out.Close(); close(d.done) }()
	t.Cleanup(d.stop)

	// Wait for the real greeting (generous: a loaded CI machine is slow to fork).
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-d.done:
			return nil, fmt.Errorf("dovecot exited early:\n%s", d.Log())
		default:
		}
		if err := d.probe(); err == nil {
			return d, nil
		} else if time.Now().After(deadline) {
			t.Fatalf("testenv: dovecot on %s not ready after 60s: %v\n%s", d.Addr, err, d.Log())
		}
		select {
		case <-d.done:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (d *Dovecot) probe() error {
	c, err := net.DialTimeout("tcp", d.Addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.Contains(line, "[CAPABILITY") {
			fmt.Fprintf(c, "p LOGOUT\r\n")
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

func (d *Dovecot) stop() {
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
}

// Message i of the seeded mailbox; tests fetch these back.
func Message(user string, i int) string {
	return fmt.Sprintf("From: postmaster@example.org\r\nTo: %s\r\nSubject: test message %d\r\nDate: Mon, 02 Nov 2026 10:00:0%d +0000\r\nMessage-ID: <%d.%s@example.org>\r\n\r\nHello %s, this is message %d.\r\n", user, i, i, i, strings.ReplaceAll(user, "@", "."), user, i)
}

// seedMaildir creates a maildir with three messages in new/.
func seedMaildir(t testing.TB, root, user string, uid, gid int) {
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, sub), 0o700); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	for i := 1; i <= 3; i++ {
		name := filepath.Join(root, "new", fmt.Sprintf("17000000%02d.M%dP1.imapgate", i, i))
		WriteFile(t, name, []byte(Message(user, i)))
	}
	filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			os.Chown(p, uid, gid)
		}
		return nil
	})
	os.Chown(filepath.Dir(root), uid, gid)
}

// freePort finds a free TCP port on 127.0.0.1 (a small race with other processes is
// accepted; Dovecot fails loudly if it loses it).
func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
