// Command profsum summarises a CPU profile of the front (scripts/bench.sh takes one
// under the full-handshake load) into crypto and everything else, as docs/performance.md
// reports it. It reads the stacks from `go tool pprof -traces PROFILE` on stdin. Each
// sample is charged to the function it was in (an asynchronous preemption to the
// function it interrupted): crypto primitives (crypto/… but not crypto/tls,
// crypto/x509 or the cryptobyte parser; assembly such as p256MulInternal) count as crypto; the rest is split
// into logging, system calls and network polling, GC and allocation, the scheduler,
// TLS protocol code, certificate parsing, the front's own code, and other. It is a
// benchmark tool.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	name := flag.String("name", "the server", "what was profiled, for the table's heading")
	flag.Parse()
	samples, err := parse(bufio.NewScanner(os.Stdin))
	if err != nil {
		fmt.Fprintln(os.Stderr, "profsum:", err)
		os.Exit(1)
	}
	var total time.Duration
	byClass, byCrypto := map[string]time.Duration{}, map[string]time.Duration{}
	for _, s := range samples {
		total += s.value
		c, op := classify(s.stack)
		byClass[c] += s.value
		if op != "" {
			byCrypto[op] += s.value
		}
	}
	if total == 0 {
		fmt.Fprintln(os.Stderr, "profsum: no samples on stdin (pipe `go tool pprof -traces PROFILE`)")
		os.Exit(1)
	}
	fmt.Printf("| CPU of %s (%.2f s sampled) | share |\n| --- | --- |\n", *name, total.Seconds())
	print(byClass, total)
	fmt.Printf("\n| crypto, by operation | share of all CPU |\n| --- | --- |\n")
	print(byCrypto, total)
}

func print(m map[string]time.Duration, total time.Duration) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] })
	for _, k := range keys {
		fmt.Printf("| %s | %.1f %% |\n", k, 100*float64(m[k])/float64(total))
	}
}

type sample struct {
	value time.Duration
	stack []string // leaf first
}

// parse reads pprof's -traces output: blocks separated by "-----------+---…" lines,
// each starting with "<value> <leaf function>" followed by one caller per line.
func parse(sc *bufio.Scanner) ([]sample, error) {
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var out []sample
	var cur *sample
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "-----------+") {
			cur = nil
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if cur == nil {
			if len(f) < 2 {
				continue
			}
			d, err := time.ParseDuration(f[0])
			if err != nil {
				if _, err := strconv.ParseFloat(f[0], 64); err != nil {
					continue // a header line, or labels
				}
				continue
			}
			out = append(out, sample{value: d, stack: []string{f[1]}})
			cur = &out[len(out)-1]
			continue
		}
		if strings.Contains(f[0], ":") && !strings.Contains(f[0], ".") {
			continue // a label line ("key:value")
		}
		cur.stack = append(cur.stack, f[0])
	}
	return out, sc.Err()
}

// classify names what a sample did, and for crypto the operation.
func classify(stack []string) (class, op string) {
	leaf := stack[0]
	if leaf == "runtime.asyncPreempt" && len(stack) > 1 {
		leaf = stack[1]
	}
	has := func(sub string) bool {
		for _, f := range stack {
			if strings.Contains(f, sub) {
				return true
			}
		}
		return false
	}
	if isCrypto(leaf) {
		// The operation is named by the handshake step that called the primitive.
		kex := "key exchange (X25519)"
		if has("mlkem") {
			kex = "key exchange (X25519MLKEM768)"
		}
		switch {
		case has("sendServerCertificate") || has("sendServerKeyExchange"):
			op = "server signature (CertificateVerify, ECDSA P-256 sign)"
		case has("readClientCertificate") || has("readClientCertificateVerify") || has("verifyHandshakeSignature"):
			op = "client signature check (CertificateVerify verify)"
		case has("crypto/x509"):
			op = "certificate chain verification (crypto/x509)"
		case has("processClientHello") || has("serverSharedSecret") || has("crypto/ecdh") || has("mlkem"):
			op = kex
		case has("hkdf") || has("hmac") || has("sha256") || has("sha512") || has("tls13"):
			op = "key schedule and transcript hashes (HKDF, HMAC, SHA-2)"
		case has("aes") || has("gcm") || has("chacha"):
			op = "record encryption (AEAD)"
		case has("ticket") || has("Ticket"):
			op = "session tickets"
		default:
			op = "other crypto"
		}
		return "crypto primitives", op
	}
	switch {
	case has("log/slog"):
		return "logging (log/slog)", ""
	case has("runtime.gcBgMarkWorker") || strings.HasPrefix(leaf, "runtime.gc") || strings.HasPrefix(leaf, "runtime.scanobject") ||
		strings.HasPrefix(leaf, "runtime.greyobject") || strings.HasPrefix(leaf, "runtime.findObject") || strings.HasPrefix(leaf, "runtime.markBits"):
		return "GC", ""
	case strings.HasPrefix(leaf, "runtime.malloc") || strings.HasPrefix(leaf, "runtime.nextFreeFast") || strings.HasPrefix(leaf, "runtime.memclr") ||
		strings.Contains(leaf, "mspan") || strings.Contains(leaf, "mheap") || strings.Contains(leaf, "mcache") || strings.HasPrefix(leaf, "runtime.heapBits") ||
		strings.HasPrefix(leaf, "runtime.newobject") || strings.HasPrefix(leaf, "runtime.makeslice") || strings.HasPrefix(leaf, "runtime.growslice"):
		return "allocation", ""
	case strings.Contains(leaf, "syscall") || strings.Contains(leaf, "Syscall") || strings.HasPrefix(leaf, "runtime.netpoll") ||
		strings.HasPrefix(leaf, "runtime.futex") || strings.HasPrefix(leaf, "runtime.epoll") || strings.HasPrefix(leaf, "internal/poll"):
		return "system calls, network polling", ""
	case strings.HasPrefix(leaf, "runtime.schedule") || strings.HasPrefix(leaf, "runtime.findRunnable") || strings.HasPrefix(leaf, "runtime.stealWork") ||
		strings.HasPrefix(leaf, "runtime.runqgrab") || strings.HasPrefix(leaf, "runtime.usleep") || strings.HasPrefix(leaf, "runtime.procyield") ||
		strings.HasPrefix(leaf, "runtime.lock") || strings.HasPrefix(leaf, "runtime.unlock") || strings.HasPrefix(leaf, "runtime.park") ||
		strings.HasPrefix(leaf, "runtime.mcall") || strings.HasPrefix(leaf, "runtime.gopark") || strings.HasPrefix(leaf, "runtime.goready"):
		return "scheduler", ""
	case strings.HasPrefix(leaf, "crypto/tls"):
		return "TLS protocol code (crypto/tls, not primitives)", ""
	case strings.HasPrefix(leaf, "crypto/x509") || strings.HasPrefix(leaf, "encoding/asn1") || strings.Contains(leaf, "cryptobyte") || strings.HasPrefix(leaf, "encoding/pem"):
		return "certificate parsing and chain building (crypto/x509, asn1)", ""
	case strings.Contains(leaf, "imapgate/imapgate/"):
		return "front code (mtls, crl)", ""
	case strings.HasPrefix(leaf, "runtime."):
		return "runtime, other (stacks, maps, strings)", ""
	default:
		return "other Go code", ""
	}
}

// isCrypto is a cryptographic primitive (not protocol or parsing code).
func isCrypto(fn string) bool {
	if strings.HasPrefix(fn, "crypto/tls") || strings.HasPrefix(fn, "crypto/x509") || strings.Contains(fn, "cryptobyte") {
		return false // protocol code and parsing
	}
	return strings.HasPrefix(fn, "crypto/") || strings.Contains(fn, "golang.org/x/crypto") ||
		strings.HasPrefix(fn, "p256") || strings.HasPrefix(fn, "_p256")
}
