package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imapgate/imapgate/testenv"
)

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// imapgateBinary builds cmd/imapgate once per test run: the test drives the
// program a deployment runs, not its packages.
func imapgateBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			binErr = fmt.Errorf("the e2e tests build imapgate with go, which is not in PATH: %w", err)
			return
		}
		if binDir, binErr = os.MkdirTemp("", "imapgate-e2e-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "imapgate")
		out, err := exec.Command(goBin, "build", "-o", binPath, "github.com/imapgate/imapgate/cmd/imapgate").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build ./cmd/imapgate: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// imapgate runs one imapgate command to its end and returns its output.
func imapgate(t *testing.T, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, imapgateBinary(t), args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("imapgate %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// deployment is imapgate as an organisation runs it: the CA, a front (the
// imapgate binary with its YAML file) before Dovecot, and alice's card
// enrolled by the help desk's `imapgate token enroll`.
type deployment struct {
	ca       *testenv.CA
	dovecot  *testenv.Dovecot
	card     *testenv.SoftHSMToken
	serial   string // of alice's certificate on the card
	front    string // host:port of the front's IMAPS listener
	smtp     string // host:port of its submission gate (implicit TLS, as port 465)
	postfix  *testenv.Postfix
	frontLog *testenv.LockedBuffer
	roots    []byte // what Thunderbird imports: the CA's root, which the front's certificate chains to
}

func newDeployment(t *testing.T) *deployment {
	t.Helper()
	d := &deployment{ca: testenv.StartCA(t), dovecot: testenv.StartDovecot(t, testenv.DovecotOptions{Submission: true}), card: testenv.SoftHSM(t)}
	d.postfix = testenv.StartPostfix(t, d.dovecot)
	dir := t.TempDir()

	// The help desk enrolls alice's card. Enroll writes the CA certificates
	// onto the card too (the default): NSS offers a card's certificate only
	// when it can link it to a CA named in the front's CertificateRequest.
	d.serial = d.enroll(t, d.card, testenv.Alice.Name)

	// The front's own certificate, from the CA (`imapgate cert server`, admin
	// credential): end-entity, serverAuth, for 127.0.0.1 — Thunderbird refuses
	// a CA:TRUE one. Thunderbird is told to trust the CA's root.
	imapgate(t, nil, "cert", "server", "--dns", "localhost", "--ip", "127.0.0.1", "--out", dir,
		"--ca", d.ca.URL, "--cred", d.ca.AdminCred)
	certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	d.roots = testenv.CertPEM(d.ca.Root)
	issuer := filepath.Join(dir, "intermediate.pem")
	testenv.WriteFile(t, issuer, testenv.CertPEM(d.ca.Intermediate))
	d.front = "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	d.smtp = "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	cfg := filepath.Join(dir, "front.yaml")
	// throttle: short delays keep the refused cases quick (the throttle has
	// its own tests); the budget stays well above what these cases spend.
	testenv.WriteFile(t, cfg, []byte(fmt.Sprintf(`listen: %s
crl_state_file: %s
tls:
  cert_file: %s
  key_file: %s
  client_ca_file: %s
crl:
  - url: %s/crl
    issuer_file: %s
    interval: 200ms
backend:
  address: %s
smtp:
  listen: %s
  backend:
    address: %s
throttle:
  base_delay: 50ms
  max_delay: 200ms
  lockout_after: 50
`, d.front, filepath.Join(dir, "crl-state.json"), certFile, keyFile, d.ca.RootsPEM, d.ca.PublicURL, issuer, d.dovecot.Addr, d.smtp, d.postfix.Addr)))
	imapgate(t, nil, "front", "--config", cfg, "--check")
	d.startFront(t, cfg)
	return d
}

// enroll runs the help desk's `imapgate token enroll` for user on card, with
// extra flags, and returns the certificate's serial.
func (d *deployment) enroll(t *testing.T, card *testenv.SoftHSMToken, user string, flags ...string) string {
	t.Helper()
	pinFile := filepath.Join(t.TempDir(), "pin")
	testenv.WriteFile(t, pinFile, []byte(card.PIN+"\n"))
	out := imapgate(t, card.Env(), append([]string{"token", "enroll", "--module", card.Module, "--token", card.Label, "--pin-file", pinFile,
		"--ca", d.ca.URL, "--cred", d.ca.EnrollCred, "--user", user}, flags...)...)
	m := regexp.MustCompile(`(?m)^serial\s+([0-9A-F]+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("token enroll printed no serial:\n%s", out)
	}
	return m[1]
}

// acceptableCAs is the list of CA names the front's CertificateRequest
// carries, as a TLS client sees it.
func (d *deployment) acceptableCAs(t *testing.T) [][]byte {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(d.ca.Root)
	var names [][]byte
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", d.front, &tls.Config{RootCAs: roots,
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			names = cri.AcceptableCAs
			return &tls.Certificate{}, nil
		}})
	if err == nil {
		conn.Close()
	}
	if names == nil {
		t.Fatalf("the front sent no CertificateRequest (dial: %v)", err)
	}
	return names
}

// startFront runs `imapgate front` until the test ends and waits until it
// logs that it listens.
func (d *deployment) startFront(t *testing.T, cfg string) {
	t.Helper()
	d.frontLog = &testenv.LockedBuffer{}
	cmd := exec.Command(imapgateBinary(t), "--log-level", "debug", "front", "--config", cfg)
	cmd.Stdout, cmd.Stderr = d.frontLog, d.frontLog
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		if t.Failed() {
			t.Logf("front log:\n%s", d.frontLog)
		}
	})
	listening := fmt.Sprintf(`"msg":"front listening","addr":"%s"`, d.front)
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(d.frontLog.String(), listening); {
		select {
		case <-exited:
			t.Fatalf("imapgate front exited:\n%s", d.frontLog)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("imapgate front does not listen on %s:\n%s", d.front, d.frontLog)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// revoke revokes alice's card through the CA's API (`imapgate cert revoke`
// with the admin credential) and waits until the front has loaded the CRL
// that lists it.
func (d *deployment) revoke(t *testing.T) {
	t.Helper()
	out := imapgate(t, nil, "cert", "revoke", d.serial, "--reason", "keyCompromise", "--comment", "card lost",
		"--ca", d.ca.URL, "--cred", d.ca.AdminCred)
	m := regexp.MustCompile(`CRL number (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("cert revoke: %s", out)
	}
	n, _ := new(big.Int).SetString(m[1], 10)
	want := fmt.Sprintf(`"msg":"crl loaded","source":"%s/crl","number":"%s"`, d.ca.PublicURL, hex.EncodeToString(n.Bytes()))
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(d.frontLog.String(), want); {
		if time.Now().After(deadline) {
			t.Fatalf("the front did not load CRL %s within 30s (polls every 200ms)", m[1])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mozillaStatus matches the status lines Thunderbird puts before a message it stores.
var mozillaStatus = regexp.MustCompile(`^(X-Mozilla-Status2?: [0-9a-f]+\r?\n)+`)

// tbRun is what one Thunderbird run saw.
type tbRun struct {
	sync    *testenv.SyncResult
	dialogs []testenv.Dialog
	tb      *testenv.Thunderbird
}

func (r *tbRun) count(kind string) int {
	n := 0
	for _, d := range r.dialogs {
		if d.Kind == kind {
			n++
		}
	}
	return n
}

// startThunderbird starts a fresh Thunderbird with card's module loaded, the
// front's root trusted and the PIN prompt answered with pin.
func (d *deployment) startThunderbird(ctx context.Context, t *testing.T, card *testenv.SoftHSMToken, pin string) *testenv.Thunderbird {
	t.Helper()
	tb := testenv.StartThunderbird(t, testenv.ThunderbirdOptions{Env: []string{"SOFTHSM2_CONF=" + card.Conf}})
	err := tb.Setup(ctx, testenv.ThunderbirdSetup{
		Module: card.Module, ModuleName: "imapgate card", TokenLabel: card.Label, PIN: pin,
		Roots: d.roots,
		// The card's certificate without a chooser dialog.
		Prefs: map[string]any{"security.default_personal_cert": "Select Automatically"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// thunderbird runs a fresh Thunderbird against the front: the card's module
// loaded, the front's root trusted, the PIN prompt answered with pin, the
// password in the login manager, an IMAP account for user, then a sync of
// INBOX with offline download.
func (d *deployment) thunderbird(t *testing.T, card *testenv.SoftHSMToken, user, password, pin string) *tbRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tb := d.startThunderbird(ctx, t, card, pin)
	_, port, _ := net.SplitHostPort(d.front)
	p, _ := strconv.Atoi(port)
	key, err := tb.AddIMAPAccount(ctx, testenv.IMAPAccount{Host: "127.0.0.1", Port: p, User: user, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	res, err := tb.SyncInbox(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	dialogs, err := tb.Dialogs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := &tbRun{sync: res, dialogs: dialogs, tb: tb}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sync: %+v\ndialogs: %+v", *res, r.dialogs)
		}
	})
	return r
}

// waitDialog waits for a dialog of kind whose text holds text (an ALERT is
// shown once the failed sync has been reported, not necessarily before).
func (r *tbRun) waitDialog(t *testing.T, kind, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := r.tb.WaitDialog(ctx, func(d testenv.Dialog) bool { return d.Kind == kind && strings.Contains(d.Text, text) })
	r.dialogs = d
	if err != nil {
		t.Fatalf("no %s dialog saying %q: %v", kind, text, err)
	}
}

// wantInbox checks that the sync stored user's three seeded messages offline.
func (r *tbRun) wantInbox(t *testing.T, user string) {
	t.Helper()
	if !r.sync.OK {
		t.Fatalf("sync failed at %s: %s", r.sync.Step, r.sync.Status)
	}
	if len(r.sync.Inbox) != 3 {
		t.Fatalf("INBOX has %d messages, want the 3 seeded", len(r.sync.Inbox))
	}
	for i, m := range r.sync.Inbox {
		want := testenv.Message(user, i+1)
		if m.Subject != fmt.Sprintf("test message %d", i+1) || !m.Offline {
			t.Errorf("message %d: subject %q, offline %v", i+1, m.Subject, m.Offline)
		}
		// The offline store holds the message as Dovecot has it, byte
		// for byte, after Thunderbird's own X-Mozilla-Status lines.
		if got := mozillaStatus.ReplaceAllString(m.Raw, ""); got != want {
			t.Errorf("message %d stored offline as %q, want %q", i+1, m.Raw, want)
		}
	}
}

// TestThunderbird is issue 7's end-to-end check with the real Thunderbird:
// alice's SoftHSM2 card, enrolled by `imapgate token enroll` at the real CA,
// logs in through `imapgate front` to Dovecot, and Thunderbird stores her INBOX
// offline; a wrong PIN, a wrong password, bob's password on alice's card and a
// revoked card are refused, and the revoked card's ALERT text reaches the user.
//
// How dialogs are observed: Thunderbird runs headless but with its main window
// (messenger.xhtml), and every prompt it opens — NSS's PIN prompt, the "login
// failed" question, the alert with a server's [ALERT] text — is a common
// dialog, which announces itself with the observer topic common-dialog-loaded;
// the test's observer records its title and text, answers the PIN prompt,
// accepts alerts and cancels the rest. The sync runs with the main window's
// msgWindow, so Thunderbird shows server alerts as dialogs, as a user sees them.
//
// The cases run in order on one card; the revoked case is last.
func TestThunderbird(t *testing.T) {
	testenv.NeedThunderbird(t)
	d := newDeployment(t)
	alice, bob := testenv.Alice, testenv.Bob

	t.Run("syncs_inbox_offline", func(t *testing.T) {
		r := d.thunderbird(t, d.card, alice.Name, alice.Password, d.card.PIN)
		r.wantInbox(t, alice.Name)
		// One PIN prompt, however many connections Thunderbird opens: NSS
		// stays logged in to the card. No password prompt: the login
		// manager's password was right.
		logins := strings.Count(d.frontLog.String(), `"msg":"login ok"`)
		if n := r.count("pin"); n != 1 || logins < 2 {
			t.Errorf("%d PIN prompts for %d connections, want 1 for several (docs/front.md says so)", n, logins)
		}
		if len(r.dialogs) != r.count("pin") {
			t.Errorf("dialogs besides the PIN prompt: %+v", r.dialogs)
		}
	})

	// A card holding only alice's certificate (--no-ca-certs): NSS offers it
	// only if the front's CertificateRequest names its issuer, the
	// intermediate (with the roots only, NSS filters the card out and sends no
	// certificate after the PIN prompt). The front names every intermediate it
	// knows, so the card is offered and logs in.
	t.Run("leaf_only_card", func(t *testing.T) {
		leafCard := testenv.SoftHSMLabel(t, "imapgate-leaf")
		d.enroll(t, leafCard, alice.Name, "--no-ca-certs")
		if !slices.ContainsFunc(d.acceptableCAs(t), func(n []byte) bool { return bytes.Equal(n, d.ca.Intermediate.RawSubject) }) {
			t.Fatalf("the front's CertificateRequest does not name the intermediate: NSS will not offer a card holding only its leaf")
		}
		r := d.thunderbird(t, leafCard, alice.Name, alice.Password, leafCard.PIN)
		if n := r.count("pin"); n != 1 {
			t.Errorf("%d PIN prompts, want 1", n)
		}
		r.wantInbox(t, alice.Name)
	})

	// Issue 12: the same card and password send mail through the front's
	// submission gate with Thunderbird's own SMTP client, and it arrives in
	// bob's maildir through Postfix; the only dialog is the PIN prompt.
	t.Run("sends_through_submission_gate", func(t *testing.T) {
		logFrom := len(d.frontLog.String())
		res, r := d.send(t, d.card.PIN, "sent through the gate")
		if !res.OK {
			t.Fatalf("send failed: %+v", *res)
		}
		if len(r.dialogs) != r.count("pin") || r.count("pin") != 1 {
			t.Errorf("dialogs besides one PIN prompt: %+v", r.dialogs)
		}
		d.waitDelivered(t, bob.Name, "sent through the gate")
		log := d.frontLog.String()[logFrom:]
		if !regexp.MustCompile(`"msg":"login ok"[^\n]*"protocol":"smtp"`).MatchString(log) {
			t.Errorf("the front logged no SMTP login:\n%s", log)
		}
	})

	for _, c := range []struct {
		name           string
		user, password string
		pin            string
		revoke         bool
		kind, text     string // a dialog the user sees
		log            string // what the front logs
	}{
		// NSS asks again after each wrong PIN; once the user cancels, it
		// sends no certificate and the front says so.
		{name: "wrong_pin", user: alice.Name, password: alice.Password, pin: "000000",
			kind: "alert", text: "* BYE [ALERT] No client certificate was presented. Insert your smartcard", log: `"event":"handshake","result":"no_cert"`},
		// Thunderbird asks what to do: Retry, Enter New Password or Cancel.
		{name: "wrong_password", user: alice.Name, password: "not-alices-password", pin: d.card.PIN,
			kind: "confirm", text: "failed", log: `"event":"login","result":"bad_password"`},
		{name: "bobs_password_on_alices_card", user: bob.Name, password: bob.Password, pin: d.card.PIN,
			kind: "confirm", text: "failed", log: `"event":"login","result":"identity_mismatch"`},
		{name: "revoked_card", user: alice.Name, password: alice.Password, pin: d.card.PIN, revoke: true,
			kind: "alert", text: "* BYE [ALERT] Your certificate has been revoked. Call the help desk", log: `"event":"handshake","result":"revoked"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.revoke {
				d.revoke(t)
			}
			logFrom := len(d.frontLog.String())
			r := d.thunderbird(t, d.card, c.user, c.password, c.pin)
			if r.sync.OK || len(r.sync.Inbox) != 0 {
				t.Fatalf("Thunderbird synced %d messages", len(r.sync.Inbox))
			}
			r.waitDialog(t, c.kind, c.text)
			log := d.frontLog.String()[logFrom:]
			if strings.Contains(log, `"msg":"login ok"`) {
				t.Errorf("the front let a login through")
			}
			if !strings.Contains(log, c.log) {
				t.Errorf("front log lacks %s", c.log)
			}
			pins := r.count("pin")
			switch {
			case c.pin != d.card.PIN && pins < 2:
				t.Errorf("%d PIN prompts after a wrong PIN, want it asked again", pins)
			case c.pin == d.card.PIN && pins != 1:
				t.Errorf("%d PIN prompts, want 1", pins)
			}
		})
	}

	// After the revocation the card sends nothing either.
	t.Run("revoked_card_cannot_send", func(t *testing.T) {
		res, _ := d.send(t, d.card.PIN, "after the revocation")
		if res.OK {
			t.Fatal("a revoked card sent mail through the gate")
		}
		time.Sleep(2 * time.Second) // nothing may arrive late either
		if n := d.delivered(t, bob.Name, "after the revocation"); n != 0 {
			t.Fatalf("%d messages from a revoked card reached bob", n)
		}
	})
}

// send runs a fresh Thunderbird with alice's card and sends alice's message to bob
// through the front's submission gate.
func (d *deployment) send(t *testing.T, pin, subject string) (*testenv.SendResult, *tbRun) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tb := d.startThunderbird(ctx, t, d.card, pin)
	_, port, _ := net.SplitHostPort(d.smtp)
	p, _ := strconv.Atoi(port)
	alice, bob := testenv.Alice, testenv.Bob
	id := fmt.Sprintf("%d.imapgate-test@example.org", time.Now().UnixNano())
	raw := strings.ReplaceAll(fmt.Sprintf("From: %s\nTo: %s\nSubject: %s\nMessage-ID: <%s>\nDate: %s\n\nHello Bob, from Alice's card.\n",
		alice.Name, bob.Name, subject, id, time.Now().Format(time.RFC1123Z)), "\n", "\r\n")
	res, err := tb.SendMail(ctx, testenv.Mail{Host: "127.0.0.1", Port: p, User: alice.Name, Password: alice.Password,
		From: alice.Name, To: bob.Name, Raw: raw, MessageID: id})
	if err != nil {
		t.Fatal(err)
	}
	dialogs, err := tb.Dialogs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return res, &tbRun{dialogs: dialogs, tb: tb}
}

// delivered counts the messages in user's maildir whose Subject is subject.
func (d *deployment) delivered(t *testing.T, user, subject string) int {
	t.Helper()
	n := 0
	for _, sub := range []string{"new", "cur"} {
		files, _ := filepath.Glob(filepath.Join(d.dovecot.Dir, "mail", user, sub, "*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			// Postfix's virtual(8) stores LF lines.
			if err == nil && bytes.Contains(b, []byte("\nSubject: "+subject)) {
				n++
			}
		}
	}
	return n
}

// waitDelivered waits until Postfix has put the message into user's maildir.
func (d *deployment) waitDelivered(t *testing.T, user, subject string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); d.delivered(t, user, subject) == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%q did not reach %s's maildir within 30 s", subject, user)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
