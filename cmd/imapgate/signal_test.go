package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imapgate/imapgate/testenv"
)

// TestSecondSIGTERMStopsDrain runs the real binary: the first SIGTERM starts
// the drain (a client is still connected, timeouts.drain is an hour), and a
// second one ends the process at once, as an operator expects of a second
// Ctrl-C.
func TestSecondSIGTERMStopsDrain(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "imapgate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	pki := testenv.NewPKI(t)
	srvCert, srvKey := pki.Server(t).WriteFiles(t, dir, "server")
	testenv.WriteFile(t, filepath.Join(dir, "roots.pem"), testenv.CertPEM(pki.Root))
	testenv.WriteFile(t, filepath.Join(dir, "intermediate.pem"), testenv.CertPEM(pki.Intermediate))
	testenv.WriteFile(t, filepath.Join(dir, "ca.crl"), pki.CRL(t, testenv.CRLOptions{}))
	listen := "127.0.0.1:" + itoa(testenv.FreePort(t))
	conf := filepath.Join(dir, "front.yaml")
	testenv.WriteFile(t, conf, []byte(fmt.Sprintf(`listen: %q
tls:
  cert_file: %s
  key_file: %s
  client_ca_file: %s/roots.pem
crl:
  - file: %s/ca.crl
    issuer_file: %s/intermediate.pem
crl_state_file: %s/crl-state.json
backend:
  address: 127.0.0.1:1
timeouts:
  drain: 1h
`, listen, srvCert, srvKey, dir, dir, dir, dir)))

	cmd := exec.Command(bin, "front", "--config", conf)
	logs, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(logs)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "front listening") {
				close(listening)
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	select {
	case <-listening:
	case err := <-exited:
		t.Fatalf("front exited at start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("front not listening after 30 s")
	}

	alice := pki.Issue(t, testenv.LeafOptions{Emails: []string{"alice@example.org"}})
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", listen,
		&tls.Config{RootCAs: pki.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{alice.TLSCertificate()}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || !strings.HasPrefix(line, "* OK") {
		t.Fatalf("greeting %q, %v", line, err)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		t.Fatalf("the front did not drain for its open session: %v", err)
	case <-time.After(time.Second):
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("a second SIGTERM did not end the draining front")
	}
	_ = os.Remove(bin)
}
