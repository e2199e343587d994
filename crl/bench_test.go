package crl_test

import (
	"context"
	"math/big"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/imapgate/imapgate/crl"
)

// BenchmarkReload verifies and indexes CRLs in the CA's own format (see caFormat) of
// 100,000 and 1,000,000 entries: what a front does when the CA publishes a new CRL.
// Targets: under 200 ms and under 2 s a reload.
func BenchmarkReload(b *testing.B) {
	for _, tc := range []struct {
		name    string
		entries int
	}{{"100k", 100_000}, {"1M", 1_000_000}} {
		b.Run(tc.name, func(b *testing.B) {
			issuer, der := cachedCRL(b, tc.entries)
			b.SetBytes(int64(len(der)))
			b.ReportAllocs()
			b.ResetTimer()
			start, cpu := time.Now(), cpuTime(b)
			for i := 0; i < b.N; i++ {
				snap, err := crl.Parse(der, issuer, time.Now())
				if err != nil {
					b.Fatal(err)
				}
				if snap.Len() != tc.entries {
					b.Fatalf("%d entries indexed, want %d", snap.Len(), tc.entries)
				}
			}
			b.ReportMetric(float64(time.Since(start).Microseconds())/1e3/float64(b.N), "ms/reload")
			b.ReportMetric(float64((cpuTime(b)-cpu).Microseconds())/1e3/float64(b.N), "cpu-ms/reload")
			b.ReportMetric(float64(len(der))/1e6, "MB-DER")
		})
	}
}

// BenchmarkReloadResigned is BenchmarkReload/1M for a CRL the CA re-signed with the same
// entries (a new number, dates and signature): verified as any, its index the current
// snapshot's (see reuse.go).
func BenchmarkReloadResigned(b *testing.B) {
	const entries = 1_000_000
	issuer, first := cachedCRLNumber(b, entries, 1)
	_, second := cachedCRLNumber(b, entries, 2)
	// A fresh load keeps the digest of its entries, which the re-signed one compares with.
	cur, err := crl.Parse(first, issuer, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(second)))
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu := time.Now(), cpuTime(b)
	for i := 0; i < b.N; i++ {
		snap, err := crl.ParseAfter(second, issuer, time.Now(), cur)
		if err != nil {
			b.Fatal(err)
		}
		if !crl.IndexReused(snap) || snap.Len() != entries {
			b.Fatalf("index reused %v, %d entries", crl.IndexReused(snap), snap.Len())
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1e3/float64(b.N), "ms/reload")
	b.ReportMetric(float64((cpuTime(b)-cpu).Microseconds())/1e3/float64(b.N), "cpu-ms/reload")
}

// BenchmarkReloadPaced is a running front's reload of a million new entries (its
// current CRL has 100,000 others): paced (see pace.go), so ms/reload is the time until
// the new CRL is in place and cpu-ms/reload what it cost: about a sixth more than
// BenchmarkReload/1M's, the caches each sleep loses (pace.go).
func BenchmarkReloadPaced(b *testing.B) {
	issuer, small := cachedCRL(b, 100_000)
	_, der := cachedCRLNumber(b, 1_000_000, 2)
	cur, err := crl.Parse(small, issuer, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start, cpu := time.Now(), cpuTime(b)
	for i := 0; i < b.N; i++ {
		snap, err := crl.ParsePaced(der, issuer, time.Now(), cur)
		if err != nil {
			b.Fatal(err)
		}
		if snap.Len() != 1_000_000 || crl.IndexReused(snap) {
			b.Fatalf("%d entries, reused %v", snap.Len(), crl.IndexReused(snap))
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1e3/float64(b.N), "ms/reload")
	b.ReportMetric(float64((cpuTime(b)-cpu).Microseconds())/1e3/float64(b.N), "cpu-ms/reload")
}

// BenchmarkRevoked is the lookup every handshake makes, in a CRL of a million entries,
// half of the lookups for listed serials. It must not allocate (run with -benchmem;
// TestRevokedAllocationFree holds it to that).
func BenchmarkRevoked(b *testing.B) {
	issuer, der := cachedCRL(b, 1_000_000)
	snap, err := crl.Parse(der, issuer, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	_, listed := caFormatCRL(b, bigCRLs.pki, caFormat{Entries: 1000, Seed: 1_000_000})
	probes := make([]*big.Int, 0, 2*len(listed))
	for i, s := range listed {
		probes = append(probes, s, new(big.Int).Add(s, big.NewInt(int64(i+1))))
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime(b)
	hits := 0
	for i := 0; i < b.N; i++ {
		if snap.Revoked(probes[i%len(probes)]) {
			hits++
		}
	}
	b.ReportMetric(float64((cpuTime(b)-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
	if b.N >= len(probes) && hits < b.N/2-len(probes) {
		b.Fatalf("%d hits in %d lookups: the listed serials are not found", hits, b.N)
	}
}

// cpuTime is the CPU time the process has used (user and system, all threads, the
// garbage collector's included). Wall time on a shared machine says as much about the
// neighbours as about the code; the benchmarks report both.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPollUnchanged is a poll of a CRL file of a million entries that has not
// changed: "stat" as every poll is once the file has settled (see filestamp.go), "read"
// as the minute's full read, and every poll was before.
func BenchmarkPollUnchanged(b *testing.B) {
	issuer, der := cachedCRL(b, 1_000_000)
	path := filepath.Join(b.TempDir(), "ca.crl")
	if err := os.WriteFile(path, der, 0o600); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		step time.Duration // the clock's move per poll
	}{{"stat", time.Second}, {"read", 61 * time.Second}} {
		b.Run(tc.name, func(b *testing.B) {
			store, err := crl.NewStore(crl.Options{File: path, Issuer: issuer})
			if err != nil {
				b.Fatal(err)
			}
			offset := 3 * time.Second // past the settling time of the write above
			crl.SetClock(store, func() time.Time { return time.Now().Add(offset) })
			ctx := context.Background()
			if _, err := store.Refresh(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime(b)
			for i := 0; i < b.N; i++ {
				offset += tc.step
				if changed, err := store.Refresh(ctx); err != nil || changed {
					b.Fatalf("changed %v, %v", changed, err)
				}
			}
			b.ReportMetric(float64((cpuTime(b)-cpu).Microseconds())/1e3/float64(b.N), "cpu-ms/poll")
		})
	}
}
