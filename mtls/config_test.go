package mtls_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/mtls"
	"github.com/imapgate/imapgate/testenv"
)

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown_key", "listen: ':993'\nlisen: x\n", "field lisen not found"},
		{"bad_duration", "backend:\n  dial_timeout: soon\n", "time.Duration"},
		{"nothing_set", "{}\n", "tls.cert_file and tls.key_file are required"},
		{"no_crl", "{}\n", "crl: at least one CRL source"},
		{"no_backend", "{}\n", "backend.address"},
		{"bad_proxy_net", "proxy_protocol:\n  trusted_networks: [nonsense]\n", "neither an address nor a CIDR"},
		{"backend_tls_unknown", "backend:\n  address: 127.0.0.1:993\n  tls: ssl\n", "backend.tls \"ssl\": want none, implicit or starttls"},
		{"backend_ca_without_tls", "backend:\n  address: 127.0.0.1:143\n  server_name: mail.example.org\n", "set backend.tls to implicit or starttls"},
		{"backend_ca_file_missing", "backend:\n  address: 127.0.0.1:993\n  tls: implicit\n  ca_file: /nonexistent/ca.pem\n", "backend.ca_file"},
		{"backend_cert_without_key", "backend:\n  address: 127.0.0.1:993\n  tls: implicit\n  cert_file: /x.pem\n", "backend.cert_file and backend.key_file go together"},
		{"crl_both", "crl:\n  - url: http://x/crl\n    file: /x\n    issuer_file: /nonexistent\n", "issuer_file"},
		{"identity_bad_mode", "identity:\n  mode: upn\n", "identity.mode \"upn\": use email, local_part, cn or map"},
		{"identity_map_without_file", "identity:\n  mode: map\n", "identity.mode map needs identity.map_file"},
		{"identity_file_without_map", "identity:\n  map_file: /x.map\n", "set mode: map"},
		{"pop3_backend_without_listen", "pop3:\n  backend:\n    address: 127.0.0.1:110\n", "neither pop3.listen nor pop3.stls_listen"},
		{"pop3_listen_without_backend", "pop3:\n  listen: ':995'\n", "pop3.backend.address is required"},
		{"pop3_bad_listen", "pop3:\n  stls_listen: '110'\n  backend:\n    address: 127.0.0.1:110\n", "pop3.stls_listen \"110\""},
		{"pop3_backend_tls_unknown", "pop3:\n  listen: ':995'\n  backend:\n    address: 127.0.0.1:995\n    tls: ssl\n", "pop3: mtls: backend.tls \"ssl\""},
		{"smtp_backend_without_listen", "smtp:\n  backend:\n    address: 127.0.0.1:587\n", "neither smtp.listen nor smtp.starttls_listen"},
		{"smtp_listen_without_backend", "smtp:\n  starttls_listen: ':587'\n", "smtp.backend.address is required"},
		{"smtp_bad_listen", "smtp:\n  listen: '465'\n  backend:\n    address: 127.0.0.1:587\n", "smtp.listen \"465\""},
		{"smtp_backend_tls_unknown", "smtp:\n  listen: ':465'\n  backend:\n    address: 127.0.0.1:587\n    tls: ssl\n", "smtp: mtls: backend.tls \"ssl\""},
		{"smtp_negative_size", "smtp:\n  listen: ':465'\n  max_message_size: -1\n  backend:\n    address: 127.0.0.1:587\n", "smtp.max_message_size -1"},
		{"smtp_bad_hostname", "smtp:\n  listen: ':465'\n  hostname: 'two words'\n  backend:\n    address: 127.0.0.1:587\n", "smtp.hostname \"two words\""},
		{"pop3_backend_cert_without_key", "pop3:\n  listen: ':995'\n  backend:\n    address: 127.0.0.1:995\n    tls: implicit\n    cert_file: /x.pem\n", "pop3.backend.cert_file and pop3.backend.key_file go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := mtls.ParseConfig([]byte(tc.yaml))
			if err == nil {
				_, err = cfg.Options(slog.Default())
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestRunFromConfig runs the front as `imapgate front --config` does: from a YAML
// file, with metrics, a reload and a drain on cancel.
func TestRunFromConfig(t *testing.T) {
	pki := testenv.NewPKI(t)
	dc := testenv.StartDovecot(t, testenv.DovecotOptions{})
	dir := t.TempDir()
	srvCert, srvKey := pki.Server(t).WriteFiles(t, dir, "server")
	testenv.WriteFile(t, filepath.Join(dir, "roots.pem"), testenv.CertPEM(pki.Root))
	testenv.WriteFile(t, filepath.Join(dir, "intermediate.pem"), testenv.CertPEM(pki.Intermediate))
	testenv.WriteFile(t, filepath.Join(dir, "ca.crl"), pki.CRL(t, testenv.CRLOptions{}))
	testenv.WriteFile(t, filepath.Join(dir, "tickets.key"), []byte(ticketKeyLine()))
	var listen, starttls, metrics, conf, path string
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	reload := make(chan struct{}, 1)
	var done chan error
	// The free ports may be taken before Run binds them (parallel test packages): then
	// Run fails at once and we try others.
	for attempt := 1; ; attempt++ {
		listen, starttls, metrics = freeAddr(t), freeAddr(t), freeAddr(t)
		conf = fmt.Sprintf(`listen: %q
starttls_listen: %q
metrics_listen: %q
tls:
  cert_file: %s
  key_file: %s
  client_ca_file: %s/roots.pem
  session_ticket_key_file: %s/tickets.key
crl:
  - file: %s/ca.crl
    issuer_file: %s/intermediate.pem
    interval: 1s
crl_state_file: %s/crl-state.json
backend:
  address: %s
throttle:
  base_delay: 10ms
timeouts:
  drain: 1s
`, listen, starttls, metrics, srvCert, srvKey, dir, dir, dir, dir, dir, dc.Addr)
		path = filepath.Join(dir, "front.yaml")
		testenv.WriteFile(t, path, []byte(conf))
		done = make(chan error, 1)
		go func() { done <- mtls.Run(ctx, path, reload, slog.New(slog.NewJSONHandler(logs, nil))) }()
		ready := false
		for deadline := time.Now().Add(30 * time.Second); !ready && time.Now().Before(deadline); {
			select {
			case err := <-done:
				if attempt < 3 && err != nil && strings.Contains(err.Error(), "in use") {
					deadline = time.Time{}
					continue
				}
				t.Fatalf("Run: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
			ready = strings.Contains(logs.String(), "metrics listening")
		}
		if ready {
			break
		}
		if attempt == 3 {
			t.Fatalf("front not listening after 3 attempts:\n%s", logs)
		}
	}
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
		if t.Failed() {
			t.Logf("log:\n%s", logs)
		}
	}()

	alice := pki.Issue(t, testenv.LeafOptions{Emails: []string{testenv.Alice.Name}})
	cfg := &tls.Config{RootCAs: pki.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{alice.TLSCertificate()}}
	var conn *tls.Conn
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; {
		conn, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", listen, cfg)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	c := newLineConn(t, conn)
	c.line()
	c.send("a LOGIN alice@example.org alice-secret\r\n")
	if got := c.line(); !strings.HasPrefix(got, "a OK [CAPABILITY") {
		t.Fatalf("login: %q", got)
	}

	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`imapgate_front_handshakes_total{result="ok"} 1`,
		`imapgate_front_logins_total{result="ok"} 1`,
		`imapgate_front_sessions_active 1`,
		`imapgate_front_crl_number 1`,
		`imapgate_front_crl_age_seconds`,
		`imapgate_front_backend_dial_seconds_count 1`,
		`imapgate_front_backend_login_seconds_count 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// A reload with a broken file keeps the running config; a good one is taken.
	testenv.WriteFile(t, path, []byte("listen: [\n"))
	reload <- struct{}{}
	waitFor(t, logs, "reload failed")
	testenv.WriteFile(t, path, []byte(conf))
	reload <- struct{}{}
	waitFor(t, logs, "front reloaded")

	// A correctly signed CRL that has expired (an old file, a stalled mirror) is
	// refused too: swapped in, it would end every live session of its CA.
	now := time.Now()
	testenv.WriteFile(t, filepath.Join(dir, "expired.crl"), pki.CRL(t, testenv.CRLOptions{ThisUpdate: now.Add(-48 * time.Hour), NextUpdate: now.Add(-24 * time.Hour)}))
	testenv.WriteFile(t, path, []byte(strings.Replace(conf, "/ca.crl", "/expired.crl", 1)))
	reload <- struct{}{}
	waitFor(t, logs, "expired at")
	c.send("n NOOP\r\n")
	if got := c.until("n "); !strings.HasPrefix(got, "n OK") {
		t.Fatalf("live session after a reload to an expired CRL: %q", got)
	}
	testenv.WriteFile(t, path, []byte(conf))

	// A reload that points the CRL at another source swaps the poller, and the new
	// CRL reaches the session that is already open.
	pki.Revoke(alice.Cert.SerialNumber)
	testenv.WriteFile(t, filepath.Join(dir, "ca2.crl"), pki.CRL(t, testenv.CRLOptions{}))
	testenv.WriteFile(t, path, []byte(strings.Replace(conf, "/ca.crl", "/ca2.crl", 1)))
	reload <- struct{}{}
	waitFor(t, logs, "CRL sources replaced")
	if got := c.until("* BYE"); !strings.Contains(got, "revoked") {
		t.Fatalf("live session after the CRL source was replaced: %q", got)
	}
	// And a CRL source that cannot be loaded is refused; the running one stays.
	testenv.WriteFile(t, path, []byte(strings.Replace(conf, "/ca.crl", "/missing.crl", 1)))
	reload <- struct{}{}
	waitFor(t, logs, "new CRL source")

	// A reload can move the listeners: the new addresses are served, the old ones
	// closed. An address that is taken fails the reload and changes nothing.
	taken := localListen(t)
	defer taken.Close()
	busy := strings.Replace(strings.Replace(conf, "/ca.crl", "/ca2.crl", 1), listen, taken.Addr().String(), 1)
	testenv.WriteFile(t, path, []byte(busy))
	reload <- struct{}{}
	waitFor(t, logs, "listen on "+taken.Addr().String())
	newListen, newMetrics := freeAddr(t), freeAddr(t)
	moved := strings.Replace(strings.Replace(strings.Replace(conf, "/ca.crl", "/ca2.crl", 1), listen, newListen, 1), metrics, newMetrics, 1)
	testenv.WriteFile(t, path, []byte(moved))
	reload <- struct{}{}
	waitFor(t, logs, `"addr":"`+newListen+`"`)
	bob := pki.Issue(t, testenv.LeafOptions{Emails: []string{testenv.Bob.Name}})
	bcfg := &tls.Config{RootCAs: pki.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{bob.TLSCertificate()}}
	bc, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", newListen, bcfg)
	if err != nil {
		t.Fatalf("the moved listener: %v", err)
	}
	if got := newLineConn(t, bc).line(); !strings.HasPrefix(got, "* OK") {
		t.Fatalf("greeting on the moved listener: %q", got)
	}
	if old, err := net.DialTimeout("tcp", listen, 2*time.Second); err == nil {
		old.Close()
		t.Errorf("the old listen address %s still accepts connections", listen)
	}
	if resp, err := http.Get("http://" + newMetrics + "/metrics"); err != nil {
		t.Errorf("metrics on the new address: %v", err)
	} else {
		resp.Body.Close()
	}

	// The STARTTLS port answers too.
	pc, err := net.DialTimeout("tcp", starttls, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := newLineConn(t, pc).line(); !strings.Contains(got, "STARTTLS") {
		t.Fatalf("starttls greeting %q", got)
	}
	pc.Close()
	os.Remove(filepath.Join(dir, "unused"))
}

func waitFor(t *testing.T, logs *syncBuffer, s string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(logs.String(), s) {
			return
		}
	}
	t.Fatalf("log never said %q", s)
}

// waitForLine waits for one log line that holds every one of parts.
func waitForLine(t *testing.T, logs *syncBuffer, parts ...string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, l := range strings.Split(logs.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(l, p)
			}
			if all {
				return
			}
		}
	}
	t.Fatalf("no log line said all of %q", parts)
}

// TestDocsInStep: the YAML example in docs/front.md parses, and every config key is in
// its table of keys.
func TestDocsInStep(t *testing.T) {
	doc, err := os.ReadFile("../docs/front.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	start := strings.Index(text, "```yaml\n")
	end := strings.Index(text[start+8:], "```")
	if start < 0 || end < 0 {
		t.Fatal("no yaml example in docs/front.md")
	}
	if _, err := mtls.ParseConfig([]byte(text[start+8 : start+8+end])); err != nil {
		t.Fatalf("the example in docs/front.md does not parse: %v", err)
	}
	var keys []string
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name := strings.Split(f.Tag.Get("yaml"), ",")[0]
			ft := f.Type
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				walk(prefix+name+"[].", ft.Elem())
				continue
			}
			if ft.Kind() == reflect.Struct && ft != reflect.TypeOf(time.Duration(0)) {
				walk(prefix+name+".", ft)
				continue
			}
			keys = append(keys, prefix+name)
		}
	}
	walk("", reflect.TypeOf(mtls.Config{}))
	for _, k := range keys {
		if !strings.Contains(text, "| `"+k+"` |") {
			t.Errorf("docs/front.md has no row for key %s", k)
		}
	}
}

// TestSecretFilesOwnerOnly: the front refuses a TLS key or a ticket key file
// that others can read — whoever reads the ticket keys can mint tickets that
// claim any user's certificate.
func TestSecretFilesOwnerOnly(t *testing.T) {
	pki := testenv.NewPKI(t)
	dir := t.TempDir()
	certFile, keyFile := pki.Server(t).WriteFiles(t, dir, "server")
	tickets := filepath.Join(dir, "tickets.key")
	testenv.WriteFile(t, tickets, []byte(ticketKeyLine()))
	for _, tc := range []struct {
		name, loose, yaml, want string
	}{
		{"tls key", keyFile, fmt.Sprintf("tls:\n  cert_file: %s\n  key_file: %s\n", certFile, keyFile), "tls.key_file " + keyFile + " can be read or changed by others"},
		{"backend key", keyFile, fmt.Sprintf("backend:\n  address: 127.0.0.1:993\n  tls: implicit\n  cert_file: %s\n  key_file: %s\n", certFile, keyFile), "backend.key_file " + keyFile + " can be read or changed by others"},
		{"ticket keys", tickets, fmt.Sprintf("tls:\n  session_ticket_key_file: %s\n", tickets), "tls.session_ticket_key_file " + tickets + " can be read or changed by others"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Chmod(tc.loose, 0o640)
			defer os.Chmod(tc.loose, 0o600)
			cfg, err := mtls.ParseConfig([]byte(tc.yaml))
			if err == nil {
				_, err = cfg.Options(slog.Default())
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "chmod 600") {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			os.Chmod(tc.loose, 0o600)
			if _, err := mtls.ReadTicketKeys(tickets); err != nil {
				t.Fatalf("ticket keys at 0600: %v", err)
			}
		})
	}
}
