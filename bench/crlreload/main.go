// Command crlreload times what a front does when a new CRL file arrives: read it,
// verify its signature against the issuer and index its serials (crl.Store.Refresh, the
// same code the front runs), a few times per file, and prints the median and the
// slowest. scripts/bench.sh runs it on CRLs of 100,000 and 1,000,000 entries. It is a
// benchmark tool.
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
	"runtime/pprof"
	"sort"
	"time"

	"github.com/imapgate/imapgate/crl"
)

func main() {
	issuerFile := flag.String("issuer", "", "PEM certificate that signs the CRLs")
	times := flag.Int("times", 3, "loads per file")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the loads to this file")
	flag.Parse()
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
	if err := run(*issuerFile, *times, flag.Args()); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "crlreload:", err)
		os.Exit(1)
	}
}

func run(issuerFile string, times int, files []string) error {
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
	for _, f := range files {
		var d []time.Duration
		entries := 0
		for i := 0; i < times; i++ {
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
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		fi, _ := os.Stat(f)
		fmt.Printf("| %d entries (%.1f MB DER) | %.0f ms | %.0f ms |\n", entries, float64(fi.Size())/1e6,
			float64(d[len(d)/2].Microseconds())/1000, float64(d[len(d)-1].Microseconds())/1000)
	}
	return nil
}
