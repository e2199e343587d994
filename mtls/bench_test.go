package mtls_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapgate/imapgate/mtls"
	"github.com/imapgate/imapgate/testenv"
)

// Benchmarks report their own figures and compare against a baseline measured in the
// same run: a bare crypto/tls server doing the same handshake (client certificate
// required and verified against the same root) and writing the same greeting line.
// `make bench` sets IMAPGATE_BENCH=1 for the larger counts.

func benchScale(small, large int) int {
	if os.Getenv("IMAPGATE_BENCH") != "" {
		return large
	}
	return small
}

func benchOptions(o *mtls.Options) {
	o.Logger = slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	o.Limits = mtls.Limits{MaxConnections: 1 << 20, MaxConnectionsPerIP: 1 << 20, HandshakesPerIPPerMinute: 1 << 30}
}

// bareTLS is the baseline: crypto/tls alone, same policy, same greeting.
func bareTLS(b *testing.B, e *env) string {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{e.server.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    e.pki.Pool(),
	}
	ln := serveStub(b, tlsListen(b, cfg), func(c net.Conn) {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if err := c.(*tls.Conn).Handshake(); err != nil {
			return
		}
		io.WriteString(c, "* OK [CAPABILITY IMAP4rev1 SASL-IR ID LITERAL+ AUTH=PLAIN] imapgate ready.\r\n")
		io.Copy(io.Discard, c)
	})
	return ln.Addr().String()
}

// handshakes runs n TLS handshakes (each reading the greeting) with conc workers and
// returns the rate.
func handshakes(b *testing.B, addr string, cfg *tls.Config, n, conc int) float64 {
	jobs := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		jobs <- struct{}{}
	}
	close(jobs)
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256)
			for range jobs {
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 30 * time.Second}, "tcp", addr, cfg)
				if err != nil {
					errs <- err
					return
				}
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				k, err := c.Read(buf)
				c.Close()
				if err != nil || !strings.HasPrefix(string(buf[:k]), "* OK") {
					errs <- fmt.Errorf("greeting %q: %v", buf[:k], err)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkHandshake: full mTLS handshakes per second through the front (certificate
// checks, CRL lookup, greeting) against the bare crypto/tls baseline, EC P-256 and
// RSA-2048 client keys, and with a CRL of 100,000 entries. Rounds alternate between the
// two servers so background load hits both alike. The client offers no session ticket
// support, so neither server sends one, except in -tickets: there it asks for tickets
// and never uses one, as a mail client's first connection does, and both servers make
// and send a ticket on every handshake.
func BenchmarkHandshake(b *testing.B) {
	for _, tc := range []struct {
		name     string
		key      testenv.KeyType
		extra    int
		distinct bool // a new certificate for every handshake: no verified-chain cache hits
		tickets  bool
	}{
		{"EC-P256", testenv.KeyEC256, 0, false, false},
		{"RSA-2048", testenv.KeyRSA2048, 0, false, false},
		{"EC-P256-CRL100k", testenv.KeyEC256, 100_000, false, false},
		{"EC-P256-distinct-certs", testenv.KeyEC256, 0, true, false},
		{"EC-P256-tickets", testenv.KeyEC256, 0, false, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := newEnv(b, envOptions{backendAddr: "127.0.0.1:1", mod: benchOptions})
			if tc.extra > 0 {
				e.publishCRL(b, testenv.CRLOptions{Extra: tc.extra})
			}
			bare := bareTLS(b, e)
			leaf := e.pki.Issue(b, testenv.LeafOptions{Emails: []string{testenv.Alice.Name}, Key: tc.key})
			cfg := e.clientTLS(leaf)
			cfg.SessionTicketsDisabled = !tc.tickets
			if tc.tickets {
				cfg.ClientSessionCache = forgetfulCache{}
			}
			per := benchScale(60, 400)
			rounds := 4
			if tc.distinct {
				certs := make([]tls.Certificate, 2*b.N*rounds*per+40)
				for i := range certs {
					certs[i] = e.pki.Issue(b, testenv.LeafOptions{Emails: []string{testenv.Alice.Name}}).TLSCertificate()
				}
				var next atomic.Int64
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
					return &certs[int(next.Add(1)-1)%len(certs)], nil
				}
			}
			handshakes(b, e.addr, cfg, 10, 2) // warm up both
			handshakes(b, bare, cfg, 10, 2)
			b.ResetTimer()
			var tFront, tBare float64
			for i := 0; i < b.N; i++ {
				for r := 0; r < rounds; r++ {
					tBare += float64(per) / handshakes(b, bare, cfg, per, 4)
					tFront += float64(per) / handshakes(b, e.addr, cfg, per, 4)
				}
			}
			total := float64(b.N * rounds * per)
			front, base := total/tFront, total/tBare
			b.ReportMetric(front, "handshakes/s")
			b.ReportMetric(base, "bare-handshakes/s")
			b.ReportMetric(100*front/base, "%-of-bare")
		})
	}
}

// forgetfulCache makes a client ask for session tickets and never resume.
type forgetfulCache struct{}

func (forgetfulCache) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (forgetfulCache) Put(string, *tls.ClientSessionState)        {}

// BenchmarkResumedHandshake: TLS 1.3 resumptions per second (the CRL is still checked
// on each) against the bare baseline.
func BenchmarkResumedHandshake(b *testing.B) {
	e := newEnv(b, envOptions{backendAddr: "127.0.0.1:1", mod: benchOptions})
	bare := bareTLS(b, e)
	per := benchScale(100, 1000)
	var tFront, tBare float64
	for i := 0; i < b.N; i++ {
		for _, s := range []struct {
			addr string
			t    *float64
		}{{bare, &tBare}, {e.addr, &tFront}} {
			cfg := e.clientTLS(e.alice)
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(16)
			handshakes(b, s.addr, cfg, 1, 1) // gets the ticket
			c, err := tls.Dial("tcp", s.addr, cfg)
			if err != nil {
				b.Fatal(err)
			}
			c.Read(make([]byte, 128))
			resumed := c.ConnectionState().DidResume
			c.Close()
			if !resumed {
				b.Fatalf("%s: no resumption", s.addr)
			}
			*s.t += float64(per) / handshakes(b, s.addr, cfg, per, 1)
		}
	}
	total := float64(b.N * per)
	b.ReportMetric(total/tFront, "resumed/s")
	b.ReportMetric(total/tBare, "bare-resumed/s")
	b.ReportMetric(100*tBare/tFront, "%-of-bare")
}

// BenchmarkLogin: complete logins per second through the front into Dovecot (handshake,
// LOGIN, backend ID+LOGIN, OK, LOGOUT), against LOGIN+LOGOUT straight at Dovecot.
func BenchmarkLogin(b *testing.B) {
	e := newEnv(b, envOptions{mod: benchOptions})
	cfg := e.clientTLS(e.alice)
	cfg.SessionTicketsDisabled = true
	per := benchScale(20, 200)
	var tFront, tDirect float64
	for i := 0; i < b.N; i++ {
		tDirect += float64(per) / loginRate(b, per, func() (net.Conn, error) { return net.Dial("tcp", e.dovecot.Addr) })
		tFront += float64(per) / loginRate(b, per, func() (net.Conn, error) { return tls.Dial("tcp", e.addr, cfg) })
	}
	total := float64(b.N * per)
	b.ReportMetric(total/tFront, "logins/s")
	b.ReportMetric(total/tDirect, "dovecot-direct-logins/s")
}

// BenchmarkLoginBackendTLS: logins through the front to a Dovecot that speaks
// implicit TLS, against the same front and Dovecot over plain TCP in the same run.
func BenchmarkLoginBackendTLS(b *testing.B) {
	pki := testenv.NewPKI(b)
	dc := testenv.StartDovecot(b, testenv.DovecotOptions{TLSCert: pki.Server(b), ImplicitTLS: true})
	plainDC := testenv.StartDovecot(b, testenv.DovecotOptions{})
	tlsEnv := newEnv(b, envOptions{dovecot: dc, mod: func(o *mtls.Options) {
		benchOptions(o)
		o.Backend.TLS = mtls.BackendImplicitTLS
		o.Backend.TLSConfig = &tls.Config{RootCAs: pki.Pool(), ServerName: "localhost"}
	}})
	plainEnv := newEnv(b, envOptions{dovecot: plainDC, mod: benchOptions})
	per := benchScale(20, 200)
	var tTLS, tPlain float64
	for i := 0; i < b.N; i++ {
		for _, side := range []struct {
			e   *env
			sum *float64
		}{{plainEnv, &tPlain}, {tlsEnv, &tTLS}} {
			cfg := side.e.clientTLS(side.e.alice)
			cfg.SessionTicketsDisabled = true
			*side.sum += float64(per) / loginRate(b, per, func() (net.Conn, error) { return tls.Dial("tcp", side.e.addr, cfg) })
		}
	}
	total := float64(b.N * per)
	b.ReportMetric(total/tTLS, "logins/s")
	b.ReportMetric(total/tPlain, "plain-backend-logins/s")
	b.ReportMetric(100*tPlain/tTLS, "%-of-plain")
}

// loginRate logs alice in and out per times, 4 at once, over connections from
// dial, and returns logins per second.
func loginRate(b *testing.B, per int, dial func() (net.Conn, error)) float64 {
	login := func(c net.Conn) error {
		br := bufio.NewReader(c)
		c.SetDeadline(time.Now().Add(60 * time.Second))
		if _, err := br.ReadString('\n'); err != nil {
			return err
		}
		io.WriteString(c, "a LOGIN alice@example.org alice-secret\r\n")
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return err
			}
			if strings.HasPrefix(l, "a ") {
				if !strings.HasPrefix(l, "a OK") {
					return fmt.Errorf("login: %q", l)
				}
				break
			}
		}
		io.WriteString(c, "b LOGOUT\r\n")
		io.Copy(io.Discard, br)
		return nil
	}
	var wg sync.WaitGroup
	errc := make(chan error, per)
	start := time.Now()
	sem := make(chan struct{}, 4)
	for i := 0; i < per; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := dial()
			if err == nil {
				err = login(c)
				c.Close()
			}
			if err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		b.Fatal(err)
	default:
	}
	return float64(per) / time.Since(start).Seconds()
}

// BenchmarkIdleSessionMemory: heap and stack per idle proxied session (logged in, in
// IDLE) in the front's process. The clients run in a child process so that only the
// front's memory is counted. 200 sessions by default, 2000 with IMAPGATE_BENCH=1.
func BenchmarkIdleSessionMemory(b *testing.B) {
	n := benchScale(200, 2000)
	dc := testenv.StartDovecot(b, testenv.DovecotOptions{ManyClients: true})
	e := newEnv(b, envOptions{dovecot: dc, mod: benchOptions})
	dir := b.TempDir()
	cert, key := e.alice.WriteFiles(b, dir, "alice")
	root := filepath.Join(dir, "root.pem")
	testenv.WriteFile(b, root, testenv.CertPEM(e.pki.Root))
	for i := 0; i < b.N; i++ {
		beforeHeap, beforeStack := memInUse()
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperIdleClients$", "-test.v")
		cmd.Env = append(os.Environ(), "IMAPGATE_IDLE_HELPER=1", "HELPER_ADDR="+e.addr, "HELPER_CERT="+cert,
			"HELPER_KEY="+key, "HELPER_ROOT="+root, "HELPER_N="+strconv.Itoa(n))
		stdin, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		ready := false
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "HELPER READY") {
				ready = true
				break
			}
			if strings.HasPrefix(sc.Text(), "HELPER FAIL") {
				b.Fatalf("%s\nDovecot log:\n%s", sc.Text(), dc.Log())
			}
		}
		if !ready {
			b.Fatal("idle helper did not get ready")
		}
		time.Sleep(time.Second)
		afterHeap, afterStack := memInUse()
		if f := os.Getenv("IMAPGATE_HEAP_PROFILE"); f != "" {
			// What the idle sessions hold, for go tool pprof -sample_index=inuse_space.
			out, err := os.Create(f)
			if err != nil {
				b.Fatal(err)
			}
			pprof.Lookup("heap").WriteTo(out, 0)
			out.Close()
		}
		stdin.Close()
		go io.Copy(io.Discard, stdout)
		cmd.Wait()
		heap := float64(afterHeap-beforeHeap) / float64(n)
		stack := float64(afterStack-beforeStack) / float64(n)
		b.ReportMetric((heap+stack)/1024, "KiB/session")
		b.ReportMetric(heap/1024, "heap-KiB/session")
		b.ReportMetric(stack/1024, "stack-KiB/session")
		b.ReportMetric(float64(n), "sessions")
	}
}

func memInUse() (heap, stack uint64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse, m.StackInuse
}

// TestHelperIdleClients is the child process of BenchmarkIdleSessionMemory: it opens
// HELPER_N sessions, logs each in and leaves it in IDLE until stdin closes.
func TestHelperIdleClients(t *testing.T) {
	if os.Getenv("IMAPGATE_IDLE_HELPER") == "" {
		t.Skip("child process of BenchmarkIdleSessionMemory")
	}
	// The parent reads "HELPER FAIL" from stdout; the test fails as well, so that
	// the child never passes on an error.
	fatal := func(err error) {
		fmt.Println("HELPER FAIL", err)
		t.Fatal(err)
	}
	n, err := strconv.Atoi(os.Getenv("HELPER_N"))
	if err != nil {
		fatal(fmt.Errorf("HELPER_N: %w", err))
	}
	cert, err := tls.LoadX509KeyPair(os.Getenv("HELPER_CERT"), os.Getenv("HELPER_KEY"))
	if err != nil {
		fatal(err)
	}
	rootPEM, err := os.ReadFile(os.Getenv("HELPER_ROOT"))
	if err != nil {
		fatal(err)
	}
	cfg := &tls.Config{ServerName: "localhost", Certificates: []tls.Certificate{cert}}
	cfg.RootCAs = x509.NewCertPool()
	if !cfg.RootCAs.AppendCertsFromPEM(rootPEM) {
		fatal(errors.New("HELPER_ROOT holds no certificate"))
	}
	addr := os.Getenv("HELPER_ADDR")
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed error
	sem := make(chan struct{}, 16)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 60 * time.Second}, "tcp", addr, cfg)
			if err == nil {
				err = idleLogin(c)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil && failed == nil {
				failed = err
			}
			conns[i] = c
		}(i)
	}
	wg.Wait()
	if failed != nil {
		fatal(failed)
	}
	fmt.Println("HELPER READY")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}

func idleLogin(c net.Conn) error {
	c.SetDeadline(time.Now().Add(120 * time.Second))
	defer c.SetDeadline(time.Time{})
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		return err
	}
	io.WriteString(c, "a LOGIN alice@example.org alice-secret\r\nb SELECT INBOX\r\nc IDLE\r\n")
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.HasPrefix(l, "+ ") {
			return nil
		}
		if strings.HasPrefix(l, "a NO") || strings.HasPrefix(l, "b NO") || strings.HasPrefix(l, "* BYE") {
			return fmt.Errorf("idle login: %q", l)
		}
	}
}
