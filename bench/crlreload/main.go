// Command crlreload times what a front does when a new CRL file arrives: read it,
// verify its signature against the issuer and index its serials (crl.Store.Refresh, the
// same code the front runs), a few times per file, and prints the median and the
// slowest. scripts/bench.sh runs it on CRLs of 100,000 and 1,000,000 entries, and with
// --resigned on a CRL of the last file's entries signed again (the CA's scheduled
// re-signing), loaded by a store that holds the last file. With --buckets it reads the
// load generator's JSON and the front's log instead (buckets.go). It is a benchmark tool.
package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"time"

	"github.com/imapgate/imapgate/crl"
)

func main() {
	issuerFile := flag.String("issuer", "", "PEM certificate that signs the CRLs")
	times := flag.Int("times", 3, "loads per file")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the loads to this file")
	resigned := flag.String("resigned", "", "also time loading this CRL (the last file's entries, re-signed) after the last file")
	bucketsOf := flag.String("buckets", "", "the load generator's JSON: print the per-second buckets of the reloads in --log")
	logFile := flag.String("log", "", "with --buckets: the front's log")
	flag.Parse()
	if *bucketsOf != "" {
		if err := buckets(*bucketsOf, *logFile); err != nil {
			fmt.Fprintln(os.Stderr, "crlreload:", err)
			os.Exit(1)
		}
		return
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "crlreload:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*issuerFile, *times, flag.Args(), *resigned); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "crlreload:", err)
		os.Exit(1)
	}
}

func run(issuerFile string, times int, files []string, resigned string) error {
	b, err := os.ReadFile(issuerFile)
	if err != nil {
		return err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return fmt.Errorf("%s: no PEM certificate", issuerFile)
	}
	issuer, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i, f := range files {
		var d []time.Duration
		entries := 0
		for range times {
			st, err := crl.NewStore(crl.Options{File: f, Issuer: issuer, Logger: quiet})
			if err != nil {
				return err
			}
			t0 := time.Now()
			if _, err := st.Refresh(context.Background()); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			d = append(d, time.Since(t0))
			entries = st.Load().Len()
		}
		row(fmt.Sprintf("%d entries, first load", entries), f, d)
		if i == 0 {
			continue
		}
		// What a running front does: the file it holds replaced by this one. A reload of
		// entries over 10 MiB is paced (crl/pace.go).
		d, entries, err := timeReload(issuer, quiet, files[i-1], f, times)
		if err != nil {
			return err
		}
		row(fmt.Sprintf("%d entries, reload of a front holding the file before", entries), f, d)
	}
	if resigned != "" && len(files) > 0 {
		d, entries, err := timeReload(issuer, quiet, files[len(files)-1], resigned, times)
		if err != nil {
			return err
		}
		row(fmt.Sprintf("%d entries, re-signed (same entries), reload", entries), resigned, d)
	}
	return nil
}

func row(what, file string, d []time.Duration) {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	fi, _ := os.Stat(file)
	fmt.Printf("| %s (%.1f MB DER) | %.0f ms | %.0f ms |\n", what, float64(fi.Size())/1e6,
		float64(d[len(d)/2].Microseconds())/1000, float64(d[len(d)-1].Microseconds())/1000)
}

// timeReload times Refresh of a store that holds first when its file becomes second,
// as a front's does when the CA publishes: the store's own path, replaced by a rename.
func timeReload(issuer *x509.Certificate, log *slog.Logger, first, second string, times int) ([]time.Duration, int, error) {
	dir, err := os.MkdirTemp("", "crlreload")
	if err != nil {
		return nil, 0, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "crl.der")
	var d []time.Duration
	entries := 0
	for i := 0; i < times; i++ {
		if err := copyFile(first, path); err != nil {
			return nil, 0, err
		}
		st, err := crl.NewStore(crl.Options{File: path, Issuer: issuer, Logger: log})
		if err != nil {
			return nil, 0, err
		}
		if _, err := st.Refresh(context.Background()); err != nil {
			return nil, 0, fmt.Errorf("%s: %w", first, err)
		}
		if err := copyFile(second, path+".tmp"); err != nil {
			return nil, 0, err
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			return nil, 0, err
		}
		t0 := time.Now()
		if _, err := st.Refresh(context.Background()); err != nil {
			return nil, 0, fmt.Errorf("%s: %w", second, err)
		}
		d = append(d, time.Since(t0))
		entries = st.Load().Len()
	}
	return d, entries, nil
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}
