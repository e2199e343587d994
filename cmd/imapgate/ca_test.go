package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/testenv"
)

// runCLI runs the imapgate command line in-process, with ctx.
func runCLI(ctx context.Context, args ...string) (string, error) {
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// cliCAPaths lays out a CLI test's CA: its directory (not created), a 0600
// password file beside it, and free addresses for the API and the public
// plain-HTTP listener.
func cliCAPaths(t *testing.T) (dir, caDir, pw, apiURL, pubAddr string) {
	t.Helper()
	dir = t.TempDir()
	caDir = filepath.Join(dir, "ca")
	pw = filepath.Join(dir, "pw")
	testenv.WriteFile(t, pw, []byte("cli test password\n"))
	apiURL = "https://127.0.0.1:" + itoa(testenv.FreePort(t))
	pubAddr = "127.0.0.1:" + itoa(testenv.FreePort(t))
	return dir, caDir, pw, apiURL, pubAddr
}

// TestCACommandLine drives the admin's whole day through the CLI: ca init,
// ca serve, agent issue, cert sign / list / revoke, with --ca/--cred and the
// environment variables, and checks the result with openssl.
func TestCACommandLine(t *testing.T) {
	dir, caDir, pw, apiURL, pubAddr := cliCAPaths(t)
	ctx := context.Background()

	// A password file others can read is refused, and nothing is created.
	loose := filepath.Join(dir, "loose-pw")
	os.WriteFile(loose, []byte("cli test password\n"), 0o600)
	os.Chmod(loose, 0o644)
	if out, err := runCLI(ctx, "ca", "init", "--dir", caDir, "--name", "CLI Org", "--url", apiURL, "--password-file", loose); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("ca init with a 0644 password file: %v\n%s", err, out)
	}
	if _, err := os.Stat(caDir); !os.IsNotExist(err) {
		t.Fatalf("a refused ca init left %s: %v", caDir, err)
	}

	out, err := runCLI(ctx, "ca", "init", "--dir", caDir, "--name", "CLI Org", "--url", apiURL,
		"--public-url", "http://"+pubAddr, "--http-listen", pubAddr, "--password-file", pw)
	if err != nil || !strings.Contains(out, "admin credential") {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	if out, err := runCLI(ctx, "ca", "init", "--dir", caDir, "--name", "CLI Org", "--url", apiURL, "--password-file", pw); err == nil {
		t.Fatalf("second ca init succeeded:\n%s", out)
	}

	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { _, err := runCLI(sctx, "--log-level", "error", "ca", "serve", "--dir", caDir); served <- err }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("ca serve: %v", err)
		}
	})
	waitUp(t, "http://"+pubAddr+"/healthz")

	admin := filepath.Join(caDir, "admin")
	agent := filepath.Join(dir, "helpdesk")
	if out, err := runCLI(ctx, "agent", "issue", "--ca", apiURL, "--cred", admin, "--role", "enroll", "--name", "helpdesk-1", "--out", agent); err != nil {
		t.Fatalf("agent issue: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Join(agent, "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent key: %v %v", fi, err)
	}

	// The environment variables stand in for --ca and --cred.
	t.Setenv("IMAPGATE_CA", apiURL)
	t.Setenv("IMAPGATE_CRED", agent)
	key, csr := filepath.Join(dir, "alice.key"), filepath.Join(dir, "alice.csr")
	if b, err := exec.Command("openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
		"-subj", "/CN=alice@example.org", "-out", csr).CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, b)
	}
	chain := filepath.Join(dir, "alice.pem")
	if out, err := runCLI(ctx, "cert", "sign", "--csr", csr, "--user", "alice@example.org", "--out", chain); err != nil {
		t.Fatalf("cert sign: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(chain)
	blk, _ := pem.Decode(b)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	serial := strings.ToUpper(leaf.SerialNumber.Text(16))
	if len(serial)%2 == 1 {
		serial = "0" + serial
	}
	out, err = runCLI(ctx, "cert", "list", "--user", "alice@example.org")
	if err != nil || !regexp.MustCompile(serial+`\s+alice@example.org\s+valid`).MatchString(out) {
		t.Fatalf("cert list: %v\n%s", err, out)
	}
	// An enrollment agent cannot revoke; an admin can, with the serial as openssl prints it.
	if out, err := runCLI(ctx, "cert", "revoke", serial, "--reason", "keyCompromise"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("revoke as enroll agent: %v\n%s", err, out)
	}
	opensslSerial, _ := exec.Command("openssl", "x509", "-in", chain, "-noout", "-serial").Output()
	s := strings.TrimSpace(strings.TrimPrefix(string(opensslSerial), "serial="))
	out, err = runCLI(ctx, "cert", "revoke", s, "--reason", "keyCompromise", "--comment", "card lost", "--cred", admin)
	if err != nil || !strings.Contains(out, "revoked "+serial) {
		t.Fatalf("cert revoke: %v\n%s", err, out)
	}
	out, err = runCLI(ctx, "cert", "list", "--cred", admin)
	if err != nil || !regexp.MustCompile(serial+`\s+alice@example.org\s+revoked \(keyCompromise: card lost\)`).MatchString(out) ||
		!strings.Contains(out, "role:enroll CN=helpdesk-1") {
		t.Fatalf("cert list after revoke: %v\n%s", err, out)
	}
	// Page by page (--limit 1, then the "more:" line's --before), the same
	// certificates as the whole list, in its order.
	var paged []string
	more := regexp.MustCompile(`(?m)^more: imapgate cert list --limit 1 --before (\S+)$`)
	for args := []string{"cert", "list", "--cred", admin, "--limit", "1"}; ; {
		page, err := runCLI(ctx, args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, page)
		}
		lines := strings.Split(strings.TrimSpace(more.ReplaceAllString(page, "")), "\n")
		if len(lines) != 2 {
			t.Fatalf("%v: want a heading and one certificate:\n%s", args, page)
		}
		paged = append(paged, strings.Join(strings.Fields(lines[1]), " ")) // one page's columns are its own width
		m := more.FindStringSubmatch(page)
		if m == nil {
			break
		}
		if len(paged) > 20 {
			t.Fatalf("the pages do not end: %q", paged)
		}
		args = []string{"cert", "list", "--cred", admin, "--limit", "1", "--before", m[1]}
	}
	var whole []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		whole = append(whole, strings.Join(strings.Fields(l), " "))
	}
	if len(whole) < 4 || strings.Join(paged, "\n") != strings.Join(whole, "\n") {
		t.Errorf("page by page:\n%s\nthe whole list:\n%s", strings.Join(paged, "\n"), strings.Join(whole, "\n"))
	}
	if _, err := runCLI(ctx, "cert", "list", "--cred", admin, "--limit", "1", "--before", "bm90LWEtY3Vyc29y"); err == nil || !strings.Contains(err.Error(), "start the search again") {
		t.Errorf("a made-up cursor: %v", err)
	}
	// A bad reason is refused with the list of good ones.
	if _, err := runCLI(ctx, "cert", "revoke", s, "--reason", "lost", "--cred", admin); err == nil || !strings.Contains(err.Error(), "keyCompromise") {
		t.Fatalf("bad reason: %v", err)
	}
	// Missing --ca and --cred: a message that says what to pass.
	t.Setenv("IMAPGATE_CA", "")
	if _, err := runCLI(ctx, "cert", "list"); err == nil || !strings.Contains(err.Error(), "--ca URL --cred DIR") {
		t.Fatalf("no CA given: %v", err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func waitUp(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not up", url)
}

// TestCAServeRelativePasswordFile: a relative --password-file is the operator's
// path, relative to the working directory, not to the CA directory.
func TestCAServeRelativePasswordFile(t *testing.T) {
	dir, caDir, pw, apiURL, pubAddr := cliCAPaths(t)
	ctx := context.Background()
	if out, err := runCLI(ctx, "ca", "init", "--dir", caDir, "--name", "CLI Org", "--url", apiURL,
		"--public-url", "http://"+pubAddr, "--http-listen", pubAddr, "--password-file", pw); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	// ca.yaml names the old place; the password now lives in the working directory.
	work := filepath.Join(dir, "work")
	os.Mkdir(work, 0o700)
	if err := os.Rename(pw, filepath.Join(work, "moved-pw")); err != nil {
		t.Fatal(err)
	}
	t.Chdir(work)

	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		_, err := runCLI(sctx, "--log-level", "error", "ca", "serve", "--dir", caDir, "--password-file", "moved-pw")
		served <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-served:
			t.Fatalf("ca serve --password-file moved-pw (relative): %v", err)
		default:
		}
		if resp, err := http.Get("http://" + pubAddr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("ca serve not up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	if err := <-served; err != nil {
		t.Errorf("ca serve: %v", err)
	}
}
