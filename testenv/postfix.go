package testenv

import (
	"bufio"
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

// Postfix is a private Postfix on 127.0.0.1 with a submission service that
// authenticates through the Dovecot it was started with (smtpd_sasl_type = dovecot)
// and delivers mail for example.org into that Dovecot's maildirs (virtual(8)). It takes
// XCLIENT from 127.0.0.0/8 (smtpd_authorized_xclient_hosts).
type Postfix struct {
	// Addr is the submission service's host:port: plain, STARTTLS not offered (the
	// gate in front speaks TLS to clients, Postfix is internal), or offered with
	// StartPostfixTLS.
	Addr string
	// TLSAddr is, with StartPostfixTLS, a second submission listener that speaks TLS
	// from the first byte (smtpd_tls_wrappermode, port 465 style); else empty.
	TLSAddr string
	Dir     string
	cmd     *exec.Cmd
	done    chan struct{}
	once    sync.Once
}

// StartPostfix starts Postfix in front of d (started with DovecotOptions.Submission)
// and stops it when the test ends. It needs root and Debian's postfix (make deps).
func StartPostfix(t testing.TB, d *Dovecot) *Postfix {
	t.Helper()
	return StartPostfixTLS(t, d, nil)
}

// StartPostfixTLS is StartPostfix with TLS when cert is not nil: Addr offers
// STARTTLS, TLSAddr speaks TLS at once, both with cert (e.g. PKI.Server) and TLS 1.2
// or later; Postfix logs each TLS connection ("TLS connection established from").
func StartPostfixTLS(t testing.TB, d *Dovecot, cert *Leaf) *Postfix {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("testenv: Postfix tests run as root (postfix start-fg)")
	}
	if d.SASLSocket == "" {
		t.Fatal("testenv: StartPostfix needs a Dovecot started with DovecotOptions.Submission")
	}
	dir, err := os.MkdirTemp("", "imapgate-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p, err := runPostfix(dir, d, cert)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// RunPostfix starts Postfix in dir (which the caller removes) in front of d, for a
// process that is not a test (the benchmark's backend); the caller stops it with Stop.
func RunPostfix(dir string, d *Dovecot) (*Postfix, error) { return runPostfix(dir, d, nil) }

// runPostfix is RunPostfix with TLS when cert is not nil (StartPostfixTLS).
func runPostfix(dir string, d *Dovecot, cert *Leaf) (*Postfix, error) {
	if _, err := exec.LookPath("postfix"); err != nil {
		return nil, errors.New("testenv: postfix not found: install it with `make deps` (Debian package postfix)")
	}
	os.Chmod(dir, 0o755)
	conf := filepath.Join(dir, "conf")
	for _, sub := range []string{"conf", "queue", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("testenv: postfix dir: %w", err)
		}
	}
	if err := chownUser(filepath.Join(dir, "data"), "postfix"); err != nil {
		return nil, err
	}
	port, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	tlsMain, tlsPort := "smtpd_tls_security_level = none\n", 0
	if cert != nil {
		if tlsPort, err = freeLoopbackPort(); err != nil {
			return nil, err
		}
		// writeDovecotTLS's files suit Postfix too (chain, then PKCS#8 key, 0600).
		if _, err := writeDovecotTLS(conf, cert); err != nil {
			return nil, err
		}
		tlsMain = fmt.Sprintf("smtpd_tls_security_level = may\nsmtpd_tls_cert_file = %[1]s/server.crt\nsmtpd_tls_key_file = %[1]s/server.key\n"+
			"smtpd_tls_protocols = >=TLSv1.2\nsmtpd_tls_mandatory_protocols = >=TLSv1.2\nsmtpd_tls_loglevel = 1\n", conf)
	}
	main := fmt.Sprintf(`# Written by imapgate testenv; removed with its directory.
compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
maillog_file = /dev/stdout
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mail.example.org
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
virtual_mailbox_domains = example.org
virtual_mailbox_base = %[2]s/mail
virtual_mailbox_maps = texthash:%[1]s/conf/mailboxes
virtual_minimum_uid = 1
virtual_uid_maps = static:%[4]d
virtual_gid_maps = static:%[5]d
smtpd_sasl_type = dovecot
smtpd_sasl_path = %[3]s
smtpd_sasl_auth_enable = yes
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtpd_sender_restrictions = reject_sender_login_mismatch
smtpd_sender_login_maps = regexp:%[1]s/conf/sender_login
`, dir, d.Dir, d.SASLSocket, d.uid, d.gid) + tlsMain
	if err := os.WriteFile(filepath.Join(conf, "main.cf"), []byte(main), 0o644); err != nil {
		return nil, err
	}
	// Postfix's virtual(8) delivers into the maildirs Dovecot reads (mail_location
	// maildir:<dir>/mail/%u), one line per user; the trailing slash means maildir.
	var boxes strings.Builder
	for _, u := range d.Users {
		fmt.Fprintf(&boxes, "%s %s/\n", u.Name, u.Name)
	}
	if err := os.WriteFile(filepath.Join(conf, "mailboxes"), []byte(boxes.String()), 0o644); err != nil {
		return nil, err
	}
	// A user may send as their own address only.
	if err := os.WriteFile(filepath.Join(conf, "sender_login"), []byte("/^(.*)$/ ${1}\n"), 0o644); err != nil {
		return nil, err
	}
	master, err := os.ReadFile("/etc/postfix/master.cf")
	if err != nil {
		return nil, fmt.Errorf("testenv: postfix master.cf: %w", err)
	}
	var out []string
	for _, l := range strings.Split(string(master), "\n") {
		f := strings.Fields(l)
		if len(f) >= 8 && !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, " ") {
			if f[1] == "inet" {
				continue // only our submission listener below
			}
			f[4] = "n" // no chroot: the sockets are absolute paths
			l = strings.Join(f, " ")
		}
		out = append(out, l)
	}
	out = append(out, fmt.Sprintf("127.0.0.1:%d inet n - n - - smtpd", port))
	if tlsPort != 0 {
		out = append(out, fmt.Sprintf("127.0.0.1:%d inet n - n - - smtpd -o smtpd_tls_wrappermode=yes", tlsPort))
	}
	if err := os.WriteFile(filepath.Join(conf, "master.cf"), []byte(strings.Join(out, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command("postfix", "-c", conf, "start-fg")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logf, err := os.Create(filepath.Join(dir, "postfix.stdout"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("testenv: start postfix: %w", err)
	}
	p := &Postfix{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir, cmd: cmd, done: make(chan struct{})}
	if tlsPort != 0 {
		p.TLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort))
	}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	for deadline := time.Now().Add(60 * time.Second); ; {
		select {
		case <-p.done:
			return nil, fmt.Errorf("testenv: postfix exited early:\n%s", p.Log())
		default:
		}
		if c, err := net.DialTimeout("tcp", p.Addr, time.Second); err == nil {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			l, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(l, "220 mail.example.org") {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("testenv: postfix on %s not ready after 60s:\n%s", p.Addr, p.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Log returns Postfix's log so far.
func (p *Postfix) Log() string {
	var b []byte
	for _, f := range []string{"postfix.stdout"} {
		data, _ := os.ReadFile(filepath.Join(p.Dir, f))
		b = append(b, data...)
	}
	return string(b)
}

// Stop ends Postfix (postfix stop, then SIGKILL to its process group) and waits.
func (p *Postfix) Stop() {
	p.once.Do(func() {
		exec.Command("postfix", "-c", filepath.Join(p.Dir, "conf"), "stop").Run()
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
}

// chownUser gives path to the system user name.
func chownUser(path, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("testenv: user %s missing (install postfix with `make deps`): %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(path, uid, gid)
}
