package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smallstep/certificates/db"
	"github.com/smallstep/nosql/database"
)

var quiet = slog.New(slog.NewJSONHandler(io.Discard, nil))

// benchCA makes a fresh CA (bbolt) in a temporary directory, without testenv
// (which imports this package).
func benchCA(b testing.TB) *CA { return openTestCA(b, nil) }

// openTestCA is benchCA with the config edited before Open and extra options.
func openTestCA(b testing.TB, configure func(*Config), opts ...Option) *CA {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "ca")
	b.Setenv(PasswordEnv, "bench-password")
	if _, err := Init(context.Background(), InitOptions{Dir: dir, Name: "bench", URL: "https://127.0.0.1:1", PublicURL: "http://127.0.0.1:2", Log: quiet}); err != nil {
		b.Fatal(err)
	}
	cfg, err := LoadConfig(dir)
	if err != nil {
		b.Fatal(err)
	}
	if configure != nil {
		configure(cfg)
	}
	c, err := Open(context.Background(), cfg, append([]Option{WithLogger(quiet)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

func benchCSR(b testing.TB) *x509.CertificateRequest {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		b.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	return csr
}

// BenchmarkIssue: certificates per second, in-process (the authority, template,
// signature and the bbolt writes) and end to end through the HTTPS API with an
// enrollment-agent credential, 8 clients at once.
func BenchmarkIssue(b *testing.B) {
	b.Run("in-process", func(b *testing.B) {
		c := benchCA(b)
		csr := benchCSR(b)
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i++ {
			if _, err := c.Sign(context.Background(), SignRequest{CSR: csr, Identity: "bench@example.org"}, Requester{Subject: "bench"}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "certs/s")
	})
	b.Run("https-api", func(b *testing.B) {
		c := benchCA(b)
		agentDir := filepath.Join(b.TempDir(), "agent")
		if _, err := c.IssueCredential(context.Background(), RoleEnroll, "bench agent", agentDir, Requester{Subject: "bench"}); err != nil {
			b.Fatal(err)
		}
		srv := NewServer(c)
		tcfg, err := srv.TLSConfig()
		if err != nil {
			b.Fatal(err)
		}
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		hs := &http.Server{Handler: srv.Handler(), TLSConfig: tcfg}
		go hs.Serve(tls.NewListener(ln, tcfg))
		defer hs.Close()
		cert, err := tls.LoadX509KeyPair(filepath.Join(agentDir, "cert.pem"), filepath.Join(agentDir, "key.pem"))
		if err != nil {
			b.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AddCert(c.root)
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, TLSClientConfig: &tls.Config{
			RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"}}}
		body, _ := json.Marshal(SignRequestJSON{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: benchCSR(b).Raw})), User: "bench@example.org"})
		url := "https://" + ln.Addr().String() + PathSign
		var next atomic.Int64
		var wg sync.WaitGroup
		b.ResetTimer()
		start := time.Now()
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(b.N) {
					resp, err := hc.Post(url, "application/json", strings.NewReader(string(body)))
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusCreated {
						b.Errorf("status %s", resp.Status)
						return
					}
				}
			}()
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "certs/s")
	})
}

// BenchmarkCRL: time to sign the CRL with 10,000 and 100,000 revoked entries,
// and its size. The entries are written in one batch straight into the
// revocation table (the format smallstep reads), since a revocation each would
// measure bbolt's fsync, not the CRL.
func BenchmarkCRL(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			c := benchCA(b)
			fillRevoked(b, c, n)
			b.ResetTimer()
			var size int
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if err := c.RegenerateCRL(); err != nil {
					b.Fatal(err)
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			crl, err := c.CRL()
			if err != nil {
				b.Fatal(err)
			}
			size = len(crl.DER)
			parsed, err := x509.ParseRevocationList(crl.DER)
			if err != nil || len(parsed.RevokedCertificateEntries) != n {
				b.Fatalf("CRL has %d entries (%v), want %d", len(parsed.RevokedCertificateEntries), err, n)
			}
			b.ReportMetric(float64(elapsed.Milliseconds())/float64(b.N), "ms/crl")
			b.ReportMetric(float64(size)/1024, "KiB")
			b.ReportMetric(float64(size)/float64(n), "bytes/entry")
		})
	}
}

func fillRevoked(b *testing.B, c *CA, n int) {
	b.Helper()
	now := time.Now().UTC()
	const batch = 5000
	for i := 0; i < n; i += batch {
		tx := new(database.Tx)
		for j := i; j < i+batch && j < n; j++ {
			serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
			v, _ := json.Marshal(db.RevokedCertificateInfo{Serial: serial.String(), ReasonCode: 1, Reason: "bench",
				RevokedAt: now, ExpiresAt: now.Add(365 * 24 * time.Hour), MTLS: true})
			tx.Set([]byte("revoked_x509_certs"), []byte(serial.String()), v)
		}
		if err := c.db.Update(tx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServeCRL: what a front's poll costs the CA with a 100,000-entry CRL,
// a full fetch (200) and a conditional one that finds it unchanged (304), the
// usual case every few seconds per front.
func BenchmarkServeCRL(b *testing.B) {
	c := benchCA(b)
	fillRevoked(b, c, 100_000)
	if err := c.RegenerateCRL(); err != nil {
		b.Fatal(err)
	}
	h := NewServer(c).PublicHandler()
	first := httptest.NewRecorder()
	h.ServeHTTP(first, httptest.NewRequest("GET", "/crl", nil))
	etag := first.Header().Get("ETag")
	for _, tt := range []struct {
		name, inm string
		want      int
	}{{"full-200", "", 200}, {"unchanged-304", etag, 304}} {
		b.Run(tt.name, func(b *testing.B) {
			start := time.Now()
			for i := 0; i < b.N; i++ {
				req := httptest.NewRequest("GET", "/crl", nil)
				if tt.inm != "" {
					req.Header.Set("If-None-Match", tt.inm)
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != tt.want {
					b.Fatalf("status %d, want %d", rec.Code, tt.want)
				}
			}
			b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/request")
		})
	}
}

// BenchmarkAudit: one audit listing (GET /api/v1/audit) over a trail of
// 100,000 entries: the newest 100, one serial's entries and one user's.
// The trail is written in batches straight into the audit table, in the
// format writeAudit stores, and indexed as Open would (build-index: its
// time and the heap it keeps per entry).
func BenchmarkAudit(b *testing.B) {
	c := benchCA(b)
	const n = 100_000
	serial, user := fillAudit(b, c, n)
	b.Run("build-index", func(b *testing.B) {
		var kept float64
		for i := 0; i < b.N; i++ {
			c.auditIx = nil
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			if err := c.buildAuditIndex(); err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			kept = float64(after.HeapAlloc-before.HeapAlloc) / n
		}
		b.ReportMetric(kept, "heap-bytes/entry")
	})
	for _, tt := range []struct {
		name string
		q    AuditQuery
	}{
		{"newest-100", AuditQuery{Limit: 100}},
		{"by-serial", AuditQuery{Serial: serial}},
		{"by-user", AuditQuery{User: strings.ToUpper(user)}},
		{"by-user-kind", AuditQuery{User: user, Kinds: userKinds}},
		{"no-index-newest-100", AuditQuery{Limit: 100}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			if strings.HasPrefix(tt.name, "no-index") {
				// As on PostgreSQL: the whole trail read (shared by concurrent listings).
				ix := c.auditIx
				c.auditIx = nil
				defer func() { c.auditIx = ix }()
			}
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if got, err := c.Audit(tt.q); err != nil || len(got) == 0 {
					b.Fatalf("%d entries (%v)", len(got), err)
				}
			}
		})
	}
}

// fillAudit writes n audit entries, one second apart and ending now, about
// 1,000 users and n/4 serials (of 20 bytes, as the CA's are); it returns a
// serial and a user that occur.
func fillAudit(tb testing.TB, c *CA, n int) (serial, user string) {
	tb.Helper()
	start := time.Now().UTC().Add(-time.Duration(n) * time.Second)
	kinds := []string{KindUser, KindUser, KindUser, KindRole, KindServer}
	const batch = 5000
	for i := 0; i < n; i += batch {
		tx := new(database.Tx)
		for j := i; j < i+batch && j < n; j++ {
			e := AuditEntry{Time: start.Add(time.Duration(j) * time.Second), Actor: "CN=bench agent", Role: "enroll",
				Action: "issue", Kind: kinds[j%len(kinds)], Serial: benchSerial(j / 4),
				User: fmt.Sprintf("user%d@example.org", j%1000), Result: resultOK}
			v, _ := json.Marshal(e)
			tx.Set(auditTable, []byte(e.Time.Format("20060102T150405.000000000Z")+fmt.Sprintf("-%08x", j)), v)
		}
		if err := c.db.Update(tx); err != nil {
			tb.Fatal(err)
		}
	}
	if err := c.buildAuditIndex(); err != nil {
		tb.Fatal(err)
	}
	return benchSerial(n / 8), fmt.Sprintf("user%d@example.org", 7)
}

func benchSerial(i int) string {
	return SerialHex(new(big.Int).Add(new(big.Int).Lsh(big.NewInt(0x5a), 152), big.NewInt(int64(i))))
}

// BenchmarkSearch: one certificate search (GET /api/v1/certs) over 20,000
// records with every tenth revoked, through the index (two reads by key per
// certificate returned): by serial, by user (ten), the newest page of 100,
// a page of 100 half-way down, and every page of the whole listing; then
// the newest page without the index (what PostgreSQL does: every record and
// revocation read); and the index's build.
func BenchmarkSearch(b *testing.B) {
	c := benchCA(b)
	const n = 20_000
	notAfter := time.Now().Add(365 * 24 * time.Hour)
	serialOf := func(i int) *big.Int {
		return new(big.Int).Add(new(big.Int).Lsh(big.NewInt(0x5a), 120), big.NewInt(int64(i)))
	}
	pre, err := c.Search(CertQuery{}) // the CA's own: its TLS and the admin's
	if err != nil {
		b.Fatal(err)
	}
	tx := new(database.Tx)
	for i := 0; i < n; i++ {
		sn := serialOf(i)
		r := Record{Serial: SerialHex(sn), Identity: fmt.Sprintf("user%d@example.org", i%2000), Kind: KindUser, NotAfter: notAfter, IssuedAt: time.Now()}
		v, _ := json.Marshal(r)
		tx.Set(certsTable, []byte(sn.String()), v)
		if i%10 == 0 {
			rv, _ := json.Marshal(db.RevokedCertificateInfo{Serial: sn.String(), ReasonCode: 1, RevokedAt: time.Now()})
			tx.Set(revokedTable, []byte(sn.String()), rv)
		}
	}
	if err := c.db.Update(tx); err != nil {
		b.Fatal(err)
	}
	if err := c.buildCertIndex(); err != nil {
		b.Fatal(err)
	}
	serial := SerialHex(serialOf(n / 2))
	mid, err := c.SearchPage(CertQuery{Limit: n / 2})
	if err != nil || mid.Next == "" {
		b.Fatalf("half-way: %v", err)
	}
	for _, tc := range []struct {
		name    string
		q       CertQuery
		want    int
		noIndex bool
	}{
		{"serial", CertQuery{Serial: serial}, 1, false},
		{"user", CertQuery{User: "user7@example.org"}, n / 2000, false},
		{"newest-100", CertQuery{}, DefaultCertLimit, false},
		{"half-way-100", CertQuery{Before: mid.Next}, DefaultCertLimit, false},
		{"all-20000", CertQuery{Limit: -1}, n + len(pre), false},
		{"newest-100-no-index", CertQuery{}, DefaultCertLimit, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ix := c.certIx
			if tc.noIndex {
				c.certIx = nil
				defer func() { c.certIx = ix }()
			}
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				var got []CertStatus
				var err error
				if tc.q.Limit < 0 {
					got, err = c.Search(CertQuery{})
				} else {
					var p CertPage
					p, err = c.SearchPage(tc.q)
					got = p.Certs
				}
				if err != nil || len(got) != tc.want {
					b.Fatalf("%d results (%v), want %d", len(got), err, tc.want)
				}
			}
		})
	}
	// What Open spends on the index: its time, and the heap it keeps per
	// record (live heap after a GC, with and without it).
	b.Run("index-build", func(b *testing.B) {
		var ms runtime.MemStats
		c.certIx = nil
		runtime.GC()
		runtime.ReadMemStats(&ms)
		without := ms.HeapAlloc
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := c.buildCertIndex(); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(int64(ms.HeapAlloc)-int64(without))/float64(len(c.certIx.ents)), "heap-B/record")
	})
}
