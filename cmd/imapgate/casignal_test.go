package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imapgate/imapgate/testenv"
	"gopkg.in/yaml.v3"
)

// editYAML rewrites ca.yaml with edit applied to its top-level map.
func editYAML(t *testing.T, path string, edit func(m map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCAServeSIGHUPReload runs the real binary: SIGHUP moves both listeners
// to new addresses and takes the new CRL schedule and log level; a change
// of a key that needs a restart (name) is refused with a message naming it,
// and the CA goes on serving as it was.
func TestCAServeSIGHUPReload(t *testing.T) {
	dir, caDir, pw, apiURL, pubAddr := cliCAPaths(t)
	bin := filepath.Join(dir, "imapgate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if out, err := runCLI(context.Background(), "ca", "init", "--dir", caDir, "--name", "HUP Org", "--url", apiURL,
		"--public-url", "http://"+pubAddr, "--http-listen", pubAddr, "--password-file", pw); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "ca", "serve", "--dir", caDir)
	logs, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(logs)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	waitLog := func(want string) string {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("ca serve exited waiting for %q: %v", want, <-exited)
				}
				if strings.Contains(l, want) {
					return l
				}
			case <-deadline:
				t.Fatalf("no log line with %q after 60 s", want)
			}
		}
	}
	waitLog(`"ca: serving"`)
	roots := x509.NewCertPool()
	rb, _ := os.ReadFile(filepath.Join(caDir, "root_ca.crt"))
	roots.AppendCertsFromPEM(rb)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}}}
	healthy := func(url string) error {
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return &net.AddrError{Err: resp.Status, Addr: url}
		}
		return nil
	}
	if err := healthy("http://" + pubAddr + "/healthz"); err != nil {
		t.Fatal(err)
	}

	newAPI := "127.0.0.1:" + itoa(testenv.FreePort(t))
	newPub := "127.0.0.1:" + itoa(testenv.FreePort(t))
	conf := filepath.Join(caDir, "ca.yaml")
	editYAML(t, conf, func(m map[string]any) {
		m["listen"], m["http_listen"] = newAPI, newPub
		m["crl"].(map[string]any)["check_interval"] = "2s"
		m["log"] = map[string]any{"level": "debug"}
	})
	cmd.Process.Signal(syscall.SIGHUP)
	line := waitLog(`"ca: reloaded"`)
	for _, want := range []string{"crl", "listen " + newAPI, "http_listen " + newPub, "log.level DEBUG"} {
		if !strings.Contains(line, want) {
			t.Errorf("reload log line lacks %q: %s", want, line)
		}
	}
	if err := healthy("http://" + newPub + "/healthz"); err != nil {
		t.Errorf("new http_listen: %v", err)
	}
	if err := healthy("https://" + newAPI + "/healthz"); err != nil {
		t.Errorf("new listen: %v", err)
	}
	// The old listeners close once they have drained (idle: at once).
	deadline := time.Now().Add(30 * time.Second)
	for healthy("http://"+pubAddr+"/healthz") == nil {
		if time.Now().After(deadline) {
			t.Fatal("the old http_listen still answers 30 s after the reload")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A key that needs a restart: refused, named, nothing applied.
	editYAML(t, conf, func(m map[string]any) {
		m["name"] = "Renamed Org"
		m["http_listen"] = "127.0.0.1:" + itoa(testenv.FreePort(t))
	})
	cmd.Process.Signal(syscall.SIGHUP)
	line = waitLog(`"ca: reload refused"`)
	if !strings.Contains(line, "name changed") || !strings.Contains(line, "restart") {
		t.Errorf("refused reload does not name the key: %s", line)
	}
	if err := healthy("http://" + newPub + "/healthz"); err != nil {
		t.Errorf("after a refused reload: %v", err)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("ca serve did not stop on SIGTERM")
	}
}
