// Command imapgate-load is imapgate's load generator (package bench/loadgen): full or
// resumed mTLS handshakes, logins (IMAP, POP3 or SMTP submission), or sessions in IDLE
// against any implicit-TLS server on loopback, at full speed or at a set rate, with a
// JSON result on stdout. See docs/performance.md.
//
//	imapgate-load --addr 127.0.0.1:9930 --mode full --concurrency 32 --duration 5s \
//	  --cert alice.crt --key alice.key --ca root.pem --curve X25519
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/imapgate/imapgate/bench/loadgen"
)

func main() {
	var c loadgen.Config
	var mode, proto, pids, out string
	flag.StringVar(&c.Addr, "addr", "", "host:port of the IMAPS server (loopback only)")
	flag.StringVar(&c.ServerName, "server-name", "localhost", "name to verify in the server certificate")
	flag.StringVar(&mode, "mode", "full", "full | resumed | login | idle")
	flag.StringVar(&proto, "proto", "imap", "imap | pop3 | smtp: the dialect after the handshake (greeting, login, logout); idle mode is IMAP only")
	flag.Float64Var(&c.Rate, "rate", 0, "start this many operations per second (open loop, at most --concurrency at once; 0: as fast as the workers go); those that find every worker busy are reported as missed")
	flag.IntVar(&c.Concurrency, "concurrency", 4, "connections at once (idle: sessions opened at once)")
	flag.DurationVar(&c.Duration, "duration", 5*time.Second, "measured time")
	flag.DurationVar(&c.Warmup, "warmup", 500*time.Millisecond, "load before measuring, not counted")
	flag.StringVar(&c.CertFile, "cert", "", "client certificate chain (PEM; EC or RSA)")
	flag.StringVar(&c.KeyFile, "key", "", "its private key (PEM)")
	flag.StringVar(&c.CAFile, "ca", "", "roots of the server certificate (PEM)")
	flag.StringVar(&c.Curve, "curve", "X25519", "key exchange group: X25519, X25519MLKEM768, P256, or empty for Go's default list")
	flag.StringVar(&c.MaxVersion, "tls", "1.3", "highest TLS version: 1.3 or 1.2")
	flag.BoolVar(&c.Tickets, "tickets", false, "full: ask for session tickets and never resume, as a mail client's first connection does (the server then makes and sends one every time)")
	flag.StringVar(&c.User, "user", "", "login name (login, idle)")
	flag.StringVar(&c.Password, "password", "", "its password (login, idle)")
	flag.IntVar(&c.Sessions, "sessions", 2000, "idle: sessions to open")
	flag.DurationVar(&c.Hold, "hold", 2*time.Second, "idle: wait this long with all sessions open before reading PSS")
	flag.StringVar(&pids, "pid", "", "comma-separated process ids of the server: their summed PSS (idle) or CPU time per operation (other modes)")
	flag.BoolVar(&c.Children, "children", false, "add the child processes of --pid (nginx workers, Dovecot services)")
	flag.StringVar(&c.Label, "label", "", "free text copied to the JSON")
	flag.BoolVar(&c.VerifyEvery, "verify-every", false, "verify the server's certificate chain on every handshake (default: once per distinct chain, as a mail client's certificate cache does; the server's signature is checked every time)")
	flag.StringVar(&out, "out", "", "also write the JSON to this file")
	flag.Parse()
	// The load generator shares the cores with the server it measures: collect its
	// handshake garbage less often (its heap stays a few MB) unless GOGC says otherwise.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	c.Mode = loadgen.Mode(mode)
	c.Proto = loadgen.Proto(proto)
	for _, p := range strings.Split(pids, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			fail(fmt.Errorf("--pid %q: want process ids separated by commas", pids))
		}
		c.PIDs = append(c.PIDs, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := loadgen.Run(ctx, c)
	if err != nil {
		fail(err)
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	b = append(b, '\n')
	os.Stdout.Write(b)
	if out != "" {
		if err := os.WriteFile(out, b, 0o644); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "imapgate-load:", err)
	os.Exit(1)
}
