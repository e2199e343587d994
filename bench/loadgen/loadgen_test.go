package loadgen

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/testenv"
)

// stubListener is a TLS server that requires a client certificate and runs serve on
// each connection.
func stubListener(t *testing.T, pki *testenv.PKI, serve func(c net.Conn, br *bufio.Reader)) string {
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
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String()
}

// stubIMAP answers the few commands the load generator sends, enough to drive every
// mode.
func stubIMAP(t *testing.T, pki *testenv.PKI) string {
	return stubListener(t, pki, func(c net.Conn, br *bufio.Reader) {
		c.Write([]byte("* OK stub ready\r\n"))
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
	})
}

// stubPOP3SMTP speaks just enough POP3 or SMTP (greeting, EHLO with continuation
// lines, AUTH PLAIN, QUIT) for the login mode; it accepts only alice's "secret".
func stubPOP3SMTP(t *testing.T, pki *testenv.PKI, p Proto) string {
	ok, bad := "+OK", "-ERR [AUTH] Authentication failed."
	greet := "+OK stub ready\r\n"
	if p == SMTP {
		ok, bad = "235 2.7.0 Authentication successful", "535 5.7.8 Error: authentication failed"
		greet = "220-stub.invalid ESMTP\r\n220 stub ready\r\n"
	}
	good := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice@example.org\x00secret"))
	return stubListener(t, pki, func(c net.Conn, br *bufio.Reader) {
		c.Write([]byte(greet))
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			switch {
			case strings.HasPrefix(line, "EHLO ") && p == SMTP:
				c.Write([]byte("250-stub.invalid\r\n250-AUTH PLAIN LOGIN\r\n250 PIPELINING\r\n"))
			case line == good:
				c.Write([]byte(ok + "\r\n"))
			case strings.HasPrefix(line, "AUTH "):
				c.Write([]byte(bad + "\r\n"))
			case line == "QUIT" && p == SMTP:
				c.Write([]byte("221 2.0.0 Bye\r\n"))
				return
			case line == "QUIT":
				c.Write([]byte("+OK bye\r\n"))
				return
			default:
				c.Write([]byte("500 what?\r\n"))
			}
		}
	})
}

// testConfig is a short run against addr with alice's certificate.
func testConfig(t *testing.T, pki *testenv.PKI, addr string) Config {
	dir := t.TempDir()
	leaf := pki.Issue(t, testenv.LeafOptions{Emails: []string{"alice@example.org"}})
	cert, key := leaf.WriteFiles(t, dir, "alice")
	ca := filepath.Join(dir, "root.pem")
	testenv.WriteFile(t, ca, testenv.CertPEM(pki.Root))
	return Config{Addr: addr, ServerName: "localhost", CertFile: cert, KeyFile: key, CAFile: ca,
		Concurrency: 2, Duration: 300 * time.Millisecond, Warmup: 50 * time.Millisecond, Curve: "X25519",
		User: "alice@example.org", Password: "secret", Sessions: 5, Hold: 10 * time.Millisecond, PIDs: []int{os.Getpid()}}
}

// TestRunProtocols: login mode speaks POP3 and SMTP too; a wrong password is an error.
func TestRunProtocols(t *testing.T) {
	pki := testenv.NewPKI(t)
	for _, p := range []Proto{POP3, SMTP} {
		addr := stubPOP3SMTP(t, pki, p)
		for _, tc := range []struct {
			name, password string
			wantErrors     bool
		}{{"good_" + string(p), "secret", false}, {"fail_" + string(p) + "_password", "wrong", true}} {
			t.Run(tc.name, func(t *testing.T) {
				c := testConfig(t, pki, addr)
				c.Mode, c.Proto, c.Password = Login, p, tc.password
				res, err := Run(context.Background(), c)
				if err != nil {
					t.Fatal(err)
				}
				if tc.wantErrors != (res.Errors > 0 && res.Ops == 0) || !tc.wantErrors && (res.Errors != 0 || res.Ops == 0 || res.Login == nil) {
					t.Fatalf("%d ops, errors %v, want errors only: %v", res.Ops, res.ErrorKinds, tc.wantErrors)
				}
				if res.Proto != p {
					t.Fatalf("result says proto %q", res.Proto)
				}
			})
		}
	}
}

// TestRunRate: --rate paces the operations (open loop): the run starts about the rate
// asked for, not as many as the workers could do.
func TestRunRate(t *testing.T) {
	pki := testenv.NewPKI(t)
	c := testConfig(t, pki, stubIMAP(t, pki))
	c.Mode, c.Rate, c.Concurrency, c.Duration = Full, 20, 4, time.Second
	res, err := Run(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	// 20/s for 1 s: the unpaced stub does hundreds; allow for the measurement edges.
	if res.Ops < 10 || res.Ops > 25 || res.TargetRate != 20 {
		t.Fatalf("rate 20/s for 1 s: %d operations (target %v), want about 20", res.Ops, res.TargetRate)
	}
}

func TestRun(t *testing.T) {
	pki := testenv.NewPKI(t)
	base := testConfig(t, pki, stubIMAP(t, pki))
	otherRoot := filepath.Join(t.TempDir(), "other-root.pem")
	testenv.WriteFile(t, otherRoot, testenv.CertPEM(testenv.NewPKI(t).Root))
	for _, tc := range []struct {
		name       string
		mod        func(*Config)
		wantErrors bool
	}{
		{"good_full", func(c *Config) { c.Mode = Full }, false},
		{"good_full_mlkem", func(c *Config) { c.Mode = Full; c.Curve = "X25519MLKEM768" }, false},
		{"good_full_tls12", func(c *Config) { c.Mode = Full; c.MaxVersion = "1.2" }, false},
		{"good_full_tickets", func(c *Config) { c.Mode = Full; c.Tickets = true }, false},
		{"good_resumed", func(c *Config) { c.Mode = Resumed }, false},
		{"good_login", func(c *Config) { c.Mode = Login }, false},
		{"good_idle", func(c *Config) { c.Mode = Idle }, false},
		{"good_full_verify_every", func(c *Config) { c.Mode = Full; c.VerifyEvery = true }, false},
		{"fail_login_password", func(c *Config) { c.Mode = Login; c.Password = "wrong" }, true},
		// The chain cache verifies a chain before it trusts it: another root or another
		// name fails every handshake, cached or not.
		{"fail_full_other_root", func(c *Config) { c.Mode = Full; c.CAFile = otherRoot }, true},
		{"fail_resumed_other_root", func(c *Config) { c.Mode = Resumed; c.CAFile = otherRoot }, true},
		{"fail_full_other_name", func(c *Config) { c.Mode = Full; c.ServerName = "other.example" }, true},
		{"fail_full_other_name_every", func(c *Config) { c.Mode = Full; c.ServerName = "other.example"; c.VerifyEvery = true }, true},
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
		{"good_proto_smtp", func(c *Config) { c.Proto = SMTP }, ""},
		{"fail_proto", func(c *Config) { c.Proto = "nntp" }, "--proto"},
		{"fail_idle_pop3", func(c *Config) { c.Mode, c.Proto, c.Sessions, c.User, c.Password = Idle, POP3, 1, "a", "b" }, "IDLE"},
		{"good_rate", func(c *Config) { c.Rate = 100 }, ""},
		{"fail_rate_negative", func(c *Config) { c.Rate = -1 }, "--rate"},
		{"fail_rate_idle", func(c *Config) { c.Mode, c.Rate, c.Sessions, c.User, c.Password = Idle, 10, 1, "a", "b" }, "--rate"},
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
