package testenv

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ThunderbirdBinary is the mail program the end-to-end tests drive (Debian's
// package thunderbird, installed by make deps); IMAPGATE_THUNDERBIRD overrides.
const ThunderbirdBinary = "thunderbird"

//go:embed thunderbird/*.js
var thunderbirdJS embed.FS

// Thunderbird is a real Thunderbird, headless, on a throwaway profile and HOME
// in t.TempDir(), driven over Marionette in its chrome (privileged) context.
type Thunderbird struct {
	// Profile and Home are the profile directory and the HOME it ran with.
	Profile, Home string
	// M is the Marionette session (chrome context).
	M *Marionette

	cmd    *exec.Cmd
	out    *LockedBuffer
	done   chan struct{}
	waitEr error
	stop   sync.Once
}

// ThunderbirdOptions change StartThunderbird.
type ThunderbirdOptions struct {
	// Env is added to the process environment (e.g. SOFTHSM2_CONF, so the
	// PKCS#11 module Thunderbird loads sees the test's token).
	Env []string
	// Prefs are written to user.js before the start.
	Prefs map[string]any
	// Timeout bounds the whole run: the process group is killed after it
	// (default 3 minutes).
	Timeout time.Duration
}

// LockedBuffer collects a child process's output (or a log) that several
// goroutines write while a test reads it.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// thunderbirdPath finds Thunderbird, or says why it cannot run here.
func thunderbirdPath() (string, error) {
	bin := os.Getenv("IMAPGATE_THUNDERBIRD")
	if bin == "" {
		bin = ThunderbirdBinary
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("Thunderbird is not installed (%s not found): run make deps, which installs Debian's thunderbird", bin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("Thunderbird")) {
		return "", fmt.Errorf("Thunderbird cannot run on this machine (%s --version: %v): %s", path, err, bytes.TrimSpace(out))
	}
	return path, nil
}

// NeedThunderbird returns Thunderbird's path, or skips the test loudly (see
// SkipLoudly) when it is not installed or cannot run here; call it before a
// costly set-up.
func NeedThunderbird(t testing.TB) string {
	t.Helper()
	bin, err := thunderbirdPath()
	if err != nil {
		SkipLoudly(t, err.Error())
	}
	return bin
}

// StartThunderbird starts Thunderbird headless with Marionette on a port of its
// own choosing (marionette.port 0, read back from MarionetteActivePort), opens a
// session that leaves prompts to the page (unhandledPromptBehavior ignore:
// Marionette's default would dismiss NSS's PIN prompt) and switches to the chrome
// context. A machine where Thunderbird is missing or cannot run skips the test
// loudly. The process group is killed when the test ends or the timeout passes.
func StartThunderbird(t testing.TB, o ThunderbirdOptions) *Thunderbird {
	t.Helper()
	bin := NeedThunderbird(t)
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	dir := t.TempDir()
	tb := &Thunderbird{Profile: filepath.Join(dir, "profile"), Home: filepath.Join(dir, "home"),
		out: &LockedBuffer{}, done: make(chan struct{})}
	for _, d := range []string{tb.Profile, tb.Home} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	prefs := map[string]any{
		"marionette.port": 0,
		// A quiet first start: no default-client question, no account wizard,
		// no start page, no updates, no telemetry.
		"mail.shell.checkDefaultClient":              false,
		"mail.provider.suppress_dialog_on_startup":   true,
		"mail.startup.enabledMailCheckOnce":          true,
		"mailnews.start_page.enabled":                false,
		"app.update.disabledForTesting":              true,
		"datareporting.policy.dataSubmissionEnabled": false,
		"toolkit.telemetry.reportingpolicy.firstRun": false,
		"mail.rights.version":                        1,
		"browser.aboutConfig.showWarning":            false,
	}
	for k, v := range o.Prefs {
		prefs[k] = v
	}
	var userJS strings.Builder
	for k, v := range prefs {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("testenv: pref %s: %v", k, err)
		}
		fmt.Fprintf(&userJS, "user_pref(%q, %s);\n", k, b)
	}
	WriteFile(t, filepath.Join(tb.Profile, "user.js"), []byte(userJS.String()))

	tb.cmd = exec.Command(bin, "--headless", "--no-remote", "--profile", tb.Profile, "--marionette", "--remote-allow-system-access")
	tb.cmd.Env = append(append(os.Environ(), "HOME="+tb.Home, "MOZ_CRASHREPORTER_DISABLE=1", "TMPDIR="+dir), o.Env...)
	tb.cmd.Stdout, tb.cmd.Stderr = tb.out, tb.out
	// Its own process group: the content and utility processes end with it.
	tb.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := tb.cmd.Start(); err != nil {
		t.Fatalf("testenv: start %s: %v", bin, err)
	}
	go func() { tb.waitEr = tb.cmd.Wait(); close(tb.done) }()
	kill := time.AfterFunc(o.Timeout, tb.Kill)
	t.Cleanup(func() {
		kill.Stop()
		tb.Kill()
		if t.Failed() {
			t.Logf("thunderbird output (last 8 KiB, GTK's headless noise left out):\n%s", tail(quiet(tb.out.String()), 8<<10))
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	port, err := tb.marionettePort(ctx)
	if err != nil {
		t.Fatalf("testenv: thunderbird: %v\n%s", err, tail(tb.out.String(), 4<<10))
	}
	if tb.M, err = DialMarionette(ctx, "127.0.0.1:"+strconv.Itoa(port)); err != nil {
		t.Fatalf("testenv: thunderbird: %v", err)
	}
	caps, err := tb.M.NewSession(ctx, map[string]any{"unhandledPromptBehavior": "ignore"})
	if err != nil {
		t.Fatalf("testenv: thunderbird: %v", err)
	}
	if got := caps["unhandledPromptBehavior"]; got != "ignore" {
		t.Fatalf("testenv: thunderbird: the Marionette session has unhandledPromptBehavior %v, want ignore (it would dismiss NSS's PIN prompt)", got)
	}
	if err := tb.M.SetContext(ctx, "chrome"); err != nil {
		t.Fatalf("testenv: thunderbird: %v", err)
	}
	return tb
}

// marionettePort waits for the profile's MarionetteActivePort file.
func (tb *Thunderbird) marionettePort(ctx context.Context) (int, error) {
	file := filepath.Join(tb.Profile, "MarionetteActivePort")
	for {
		if b, err := os.ReadFile(file); err == nil {
			if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && p > 0 {
				return p, nil
			}
		}
		select {
		case <-tb.done:
			return 0, fmt.Errorf("exited before Marionette listened: %v", tb.waitEr)
		case <-ctx.Done():
			return 0, fmt.Errorf("no %s: %w", file, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Kill ends Thunderbird's whole process group now. Safe to call twice.
func (tb *Thunderbird) Kill() {
	tb.stop.Do(func() {
		if tb.M != nil {
			tb.M.Close()
		}
		if tb.cmd.Process != nil {
			syscall.Kill(-tb.cmd.Process.Pid, syscall.SIGKILL)
		}
		<-tb.done
	})
}

// Script runs the embedded chrome script thunderbird/NAME.js with arg as its
// arguments[0] and decodes what it calls back with into result. WebDriver ends a
// script with null when a dialog opens while it runs: scripts that start work
// leave their result in the window for another script to read.
func (tb *Thunderbird) Script(ctx context.Context, name string, arg, result any) error {
	src, err := thunderbirdJS.ReadFile("thunderbird/" + name + ".js")
	if err != nil {
		return fmt.Errorf("testenv: thunderbird script %s: %w", name, err)
	}
	for {
		err = tb.M.ExecuteAsync(ctx, string(src), []any{arg}, result)
		// A command that finds a dialog open is refused before the script
		// runs (unhandledPromptBehavior ignore): the observer answers the
		// dialog in a moment, then ask again.
		var me *MarionetteError
		if !errors.As(err, &me) || me.Code != "unexpected alert open" {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testenv: thunderbird script %s: a dialog stays open: %w", name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		select {
		case <-tb.done:
			return fmt.Errorf("testenv: thunderbird script %s: %w (thunderbird exited: %v)", name, err, tb.waitEr)
		default:
		}
		return fmt.Errorf("testenv: thunderbird script %s: %w", name, err)
	}
	return nil
}

// ThunderbirdSetup is what Setup prepares in the profile.
type ThunderbirdSetup struct {
	// Module is a PKCS#11 module loaded as a security device under ModuleName.
	Module, ModuleName string
	// TokenLabel is the label of the card whose PIN prompts are answered.
	TokenLabel string
	// PIN answers NSS's PIN prompts for TokenLabel, at most PINAnswers
	// times (default 3); later prompts are cancelled.
	PIN        string
	PINAnswers int
	// Roots are imported as trusted for servers (PEM).
	Roots []byte
	// Prefs are set at once (security.default_personal_cert, …).
	Prefs map[string]any
}

// Setup loads the PKCS#11 module, imports the roots, sets the prefs and
// registers the observer that records every dialog (common-dialog-loaded) and
// every alert handed to the mail session's user-feedback listeners, answers
// the card's PIN prompt, accepts alerts and cancels everything else.
func (tb *Thunderbird) Setup(ctx context.Context, s ThunderbirdSetup) error {
	if s.PINAnswers == 0 {
		s.PINAnswers = 3
	}
	var roots []string
	for rest := s.Roots; ; {
		der, next := pemCert(rest)
		if der == "" {
			break
		}
		roots, rest = append(roots, der), next
	}
	return tb.Script(ctx, "setup", map[string]any{
		"module": s.Module, "moduleName": s.ModuleName, "token": s.TokenLabel,
		"pin": s.PIN, "pinAnswers": s.PINAnswers, "roots": roots, "prefs": s.Prefs,
	}, nil)
}

// IMAPAccount is an IMAP account as Account creates it.
type IMAPAccount struct {
	Host     string
	Port     int
	User     string
	Password string // stored in the login manager for imap://HOST
}

// AddIMAPAccount stores the password in the login manager and creates an IMAP
// account (SSL/TLS, normal password, offline download on) for it; it returns
// the server key (server1, …).
func (tb *Thunderbird) AddIMAPAccount(ctx context.Context, a IMAPAccount) (string, error) {
	var key string
	err := tb.Script(ctx, "account", map[string]any{"host": a.Host, "port": a.Port, "user": a.User, "password": a.Password}, &key)
	return key, err
}

// OfflineMessage is one INBOX message as Thunderbird stored it.
type OfflineMessage struct {
	Subject   string `json:"subject"`
	MessageID string `json:"messageId"`
	Offline   bool   `json:"offline"` // the body is in the offline store
	Raw       string `json:"raw"`     // the stored message, as Thunderbird reads it back
}

// SyncResult is what a sync reached.
type SyncResult struct {
	// OK is true when the folder update and the offline download succeeded.
	OK bool `json:"ok"`
	// Step names the step that failed (discover, update, download), Status its
	// result code in hex.
	Step   string           `json:"step"`
	Status string           `json:"status"`
	Inbox  []OfflineMessage `json:"inbox"`
}

// SyncInbox discovers the account's folders, updates INBOX and downloads all of
// it for offline use, then lists INBOX's messages with their stored bodies.
func (tb *Thunderbird) SyncInbox(ctx context.Context, serverKey string) (*SyncResult, error) {
	return poll[SyncResult](ctx, tb, "sync", "syncresult", map[string]any{"server": serverKey})
}

// Mail is one message SendMail sends.
type Mail struct {
	Host      string // the submission server (implicit TLS)
	Port      int
	User      string // login name; the password goes to the login manager for smtp://HOST
	Password  string
	From, To  string
	Raw       string // the message as the composer would have built it (CRLF lines)
	MessageID string // without the angle brackets
}

// SendResult is how a send ended.
type SendResult struct {
	OK     bool   `json:"ok"`
	Status string `json:"status"` // the nsresult in hex
	Error  string `json:"error"`  // Thunderbird's message for the user, if any
}

// SendMail creates an outgoing server (SSL/TLS, normal password) for m.User and
// sends m.Raw through it with Thunderbird's own SMTP client, as "Send" does.
func (tb *Thunderbird) SendMail(ctx context.Context, m Mail) (*SendResult, error) {
	arg := map[string]any{"host": m.Host, "port": m.Port, "user": m.User, "password": m.Password,
		"from": m.From, "to": m.To, "raw": m.Raw, "messageId": m.MessageID}
	return poll[SendResult](ctx, tb, "send", "sendresult", arg)
}

// poll runs the script start (which leaves its result in the window) and then
// result until it returns one: a script a dialog interrupts returns null.
func poll[T any](ctx context.Context, tb *Thunderbird, start, result string, arg any) (*T, error) {
	var started string
	if err := tb.Script(ctx, start, arg, &started); err != nil {
		return nil, err
	}
	if started != "started" {
		return nil, fmt.Errorf("testenv: thunderbird: %s did not start (%q)", start, started)
	}
	for {
		var r *T
		if err := tb.Script(ctx, result, nil, &r); err != nil {
			return nil, err
		}
		if r != nil {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("testenv: thunderbird: %s: %w", start, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Dialog is a dialog Thunderbird showed, or an alert given to the mail
// session (Kind "feedback"), in order.
type Dialog struct {
	Kind   string `json:"kind"`   // pin, password, alert, confirm, feedback, other
	Title  string `json:"title"`  // the window title
	Text   string `json:"text"`   // the message shown
	Action string `json:"action"` // what the observer did: pin, accept, cancel, recorded
}

// Dialogs returns what the observer recorded so far.
func (tb *Thunderbird) Dialogs(ctx context.Context) ([]Dialog, error) {
	var d []Dialog
	err := tb.Script(ctx, "dialogs", nil, &d)
	return d, err
}

// WaitDialog waits until a recorded dialog satisfies match, and returns all.
func (tb *Thunderbird) WaitDialog(ctx context.Context, match func(Dialog) bool) ([]Dialog, error) {
	for {
		d, err := tb.Dialogs(ctx) // nil when a dialog interrupted the script
		if err != nil {
			return d, err
		}
		for _, x := range d {
			if match(x) {
				return d, nil
			}
		}
		select {
		case <-ctx.Done():
			return d, fmt.Errorf("testenv: thunderbird: no such dialog: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func pemCert(b []byte) (string, []byte) {
	const begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
	i := bytes.Index(b, []byte(begin))
	if i < 0 {
		return "", nil
	}
	j := bytes.Index(b[i:], []byte(end))
	if j < 0 {
		return "", nil
	}
	body := b[i+len(begin) : i+j]
	return strings.Join(strings.Fields(string(body)), ""), b[i+j+len(end):]
}

// quiet drops the GTK warnings a headless Gecko prints by the hundred.
func quiet(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) == "" || strings.Contains(l, "GDK_IS_SCREEN") || strings.Contains(l, "GTK_IS_ICON_THEME") {
			continue
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
