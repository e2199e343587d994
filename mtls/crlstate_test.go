package mtls_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/mtls"
	"github.com/imapgate/imapgate/testenv"
)

// TestCRLRollbackAfterRestart: the front records the highest CRL number it has seen in
// crl_state_file, so a restarted front refuses an older, validly signed CRL (one that
// does not list a card revoked since) instead of taking it until its nextUpdate; before,
// the rule lived in memory only. --check refuses it as well, without writing the file.
func TestCRLRollbackAfterRestart(t *testing.T) {
	pki := testenv.NewPKI(t)
	alice := pki.Issue(t, testenv.LeafOptions{Emails: []string{testenv.Alice.Name}})
	old := pki.CRL(t, testenv.CRLOptions{Number: big.NewInt(3)}) // alice not revoked yet
	pki.Revoke(alice.Cert.SerialNumber)
	newer := pki.CRL(t, testenv.CRLOptions{Number: big.NewInt(5)})
	path := checkConfig(t, pki, "good_server", newer, "")
	dir := filepath.Dir(path)
	cfg, err := mtls.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CRLStateFile != filepath.Join(dir, "crl-state.json") {
		t.Fatalf("crl_state_file %q", cfg.CRLStateFile)
	}
	cfg.CRLStateFile = filepath.Join(dir, "state", "crl-state.json") // a directory the front creates

	run := func(crlDER []byte) (refusal string) {
		t.Helper()
		testenv.WriteFile(t, filepath.Join(dir, "ca.crl"), crlDER)
		c := *cfg
		c.Listen = freeAddr(t)
		logs := &syncBuffer{}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- mtls.RunConfig(ctx, func() (*mtls.Config, error) { return &c, nil }, nil, slog.New(slog.NewJSONHandler(logs, nil)))
		}()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("RunConfig: %v", err)
			}
			if t.Failed() {
				t.Logf("front log:\n%s", logs)
			}
		}()
		waitFor(t, logs, "front listening")
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", c.Listen, &tls.Config{
			InsecureSkipVerify: true, // the fixture's server certificate is not for this test's names
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				cert := alice.TLSCertificate()
				return &cert, nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		l := newLineConn(t, conn)
		got := l.closed()
		if len(got) != 1 {
			t.Fatalf("alice (revoked in CRL 5) was served: %q", got)
		}
		return got[0] + "\n" + logs.String()
	}
	if got := run(newer); !strings.Contains(got, "revoked") {
		t.Fatalf("with CRL 5: %s", got)
	}
	state, err := os.ReadFile(cfg.CRLStateFile)
	if err != nil || !strings.Contains(string(state), `"crl_number": "5"`) {
		t.Fatalf("state file after the first run: %s %v", state, err)
	}
	// Restart with the older CRL 3 in place: refused, so the card is not let back in.
	got := run(old)
	if !strings.Contains(got, "[UNAVAILABLE]") || !strings.Contains(got, "refusing CRL number 3 older than the recorded in") {
		t.Fatalf("after a restart with CRL 3: %s", got)
	}

	testenv.WriteFile(t, path, []byte(strings.Replace(string(mustRead(t, path)), filepath.Join(dir, "crl-state.json"), cfg.CRLStateFile, 1)))
	before := mustRead(t, cfg.CRLStateFile)
	err = mtls.Check(context.Background(), path, &strings.Builder{}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "refusing CRL number 3") {
		t.Fatalf("check with CRL 3 after 5: %v", err)
	}
	if after := mustRead(t, cfg.CRLStateFile); string(after) != string(before) {
		t.Fatalf("check wrote the state file")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
