package loadgen

import (
	"bufio"
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/testenv"
)

// stubIMAP is a TLS server that requires a client certificate and answers the few
// commands the load generator sends, enough to drive every mode.
func stubIMAP(t *testing.T, pki *testenv.PKI) string {
	t.Helper()
	cfg := &tls.Config{
		Certificates: []tls.Certificate{pki.Server(t).TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pki.Pool(),
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte("* OK stub ready\r\n"))
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					f := strings.Fields(line)
					if len(f) < 2 {
						return
					}
					switch strings.ToUpper(f[1]) {
					case "LOGIN":
						if f[3] != `"secret"` {
							c.Write([]byte(f[0] + " NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"))
							continue
						}
						c.Write([]byte(f[0] + " OK logged in\r\n"))
					case "SELECT":
						c.Write([]byte("* 0 EXISTS\r\n" + f[0] + " OK selected\r\n"))
					case "IDLE":
						c.Write([]byte("+ idling\r\n"))
					case "LOGOUT":
						c.Write([]byte("* BYE\r\n" + f[0] + " OK bye\r\n"))
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestRun(t *testing.T) {
	pki := testenv.NewPKI(t)
	addr := stubIMAP(t, pki)
	dir := t.TempDir()
	leaf := pki.Issue(t, testenv.LeafOptions{Emails: []string{"alice@example.org"}})
	cert, key := leaf.WriteFiles(t, dir, "alice")
	ca := filepath.Join(dir, "root.pem")
	testenv.WriteFile(t, ca, testenv.CertPEM(pki.Root))
	base := Config{Addr: addr, ServerName: "localhost", CertFile: cert, KeyFile: key, CAFile: ca,
		Concurrency: 2, Duration: 300 * time.Millisecond, Warmup: 50 * time.Millisecond, Curve: "X25519",
		User: "alice@example.org", Password: "secret", Sessions: 5, Hold: 10 * time.Millisecond, PIDs: []int{os.Getpid()}}
	for _, tc := range []struct {
		name       string
		mod        func(*Config)
		wantErrors bool
	}{
		{"good_full", func(c *Config) { c.Mode = Full }, false},
		{"good_full_mlkem", func(c *Config) { c.Mode = Full; c.Curve = "X25519MLKEM768" }, false},
		{"good_full_tls12", func(c *Config) { c.Mode = Full; c.MaxVersion = "1.2" }, false},
		{"good_resumed", func(c *Config) { c.Mode = Resumed }, false},
		{"good_login", func(c *Config) { c.Mode = Login }, false},
		{"good_idle", func(c *Config) { c.Mode = Idle }, false},
		{"fail_login_password", func(c *Config) { c.Mode = Login; c.Password = "wrong" }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.mod(&c)
			res, err := Run(context.Background(), c)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantErrors {
				if res.Errors == 0 || res.Ops != 0 {
					t.Fatalf("want only errors, got %d ops, %d errors", res.Ops, res.Errors)
				}
				return
			}
			if res.Errors != 0 || res.Ops == 0 {
				t.Fatalf("want ops and no errors, got %d ops, errors %v", res.Ops, res.ErrorKinds)
			}
			if c.Mode != Idle && res.Ops >= 20 && res.ServerCPUS <= 0 {
				t.Fatalf("%d operations but no CPU time for this process", res.Ops)
			}
			switch c.Mode {
			case Resumed:
				if res.Resumed == 0 {
					t.Fatal("resumed mode: no handshake resumed")
				}
			case Login:
				if res.Login == nil || res.Login.P99 < res.Greeting.P50 {
					t.Fatalf("login latency %+v not after the greeting's %+v", res.Login, res.Greeting)
				}
			case Idle:
				if res.Idle == nil || res.Idle.Sessions != c.Sessions || res.Idle.PSSAfterKiB == 0 {
					t.Fatalf("idle result %+v", res.Idle)
				}
			default:
				if res.Resumed != 0 {
					t.Fatalf("full mode resumed %d handshakes", res.Resumed)
				}
			}
		})
	}
}

func TestConfigCheck(t *testing.T) {
	good := Config{Addr: "127.0.0.1:993", Mode: Full, Concurrency: 1, Duration: time.Second}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string // substring of the error; empty: no error
	}{
		{"good_full", func(*Config) {}, ""},
		{"fail_mode", func(c *Config) { c.Mode = "fast" }, "--mode"},
		{"fail_not_loopback", func(c *Config) { c.Addr = "192.0.2.1:993" }, "loopback"},
		{"fail_concurrency", func(c *Config) { c.Concurrency = 0 }, "--concurrency"},
		{"fail_login_no_user", func(c *Config) { c.Mode = Login }, "--user"},
		{"fail_idle_no_sessions", func(c *Config) { c.Mode = Idle; c.User, c.Password = "a", "b" }, "--sessions"},
		{"fail_duration", func(c *Config) { c.Duration = 0 }, "--duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mod(&c)
			err := c.check()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("check() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestPercentiles(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	l := percentiles(d)
	if l.P50 != 50 || l.P99 != 99 || l.Max != 100 {
		t.Fatalf("percentiles = %+v, want p50 50, p99 99, max 100", l)
	}
	if (percentiles(nil) != Latency{}) {
		t.Fatal("no samples: want zero latencies")
	}
}
