// Command demo-backend runs the private Dovecot of testenv for `make demo`: plain
// IMAP on a loopback address, with the demo users and a few messages each, until
// it is interrupted; with -pop3 and -submission also Dovecot's POP3 and a Postfix
// submission service (scripts/bench.sh's per-protocol rows). It is a test fixture,
// not part of imapgate.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/imapgate/imapgate/testenv"
)

func main() {
	dir := flag.String("dir", "", "directory for Dovecot's config, mail and logs (required)")
	addr := flag.String("addr", "127.0.0.1:10143", "IMAP listen address (loopback)")
	pop3 := flag.Bool("pop3", false, "also Dovecot's POP3, on a free loopback port")
	submission := flag.Bool("submission", false, "also Postfix submission with Dovecot SASL, on a free loopback port")
	many := flag.Bool("many", false, "limits raised for thousands of sessions (benchmarks)")
	ready := flag.String("ready", "", "write \"imap ADDR\", \"pop3 ADDR\", \"smtp ADDR\" lines to this file once all listen")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "demo-backend: give -dir")
		os.Exit(2)
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "demo-backend:", err)
		os.Exit(1)
	}
	d, err := testenv.RunDovecot(*dir, testenv.DovecotOptions{Addr: *addr, POP3: *pop3, Submission: *submission, ManyClients: *many})
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo-backend:", err)
		os.Exit(1)
	}
	defer d.Stop()
	for _, u := range d.Users {
		fmt.Printf("dovecot on %s: user %s password %s\n", d.Addr, u.Name, u.Password)
	}
	addrs := "imap " + d.Addr + "\n"
	if *pop3 {
		addrs += "pop3 " + d.POP3Addr + "\n"
	}
	if *submission {
		pdir := filepath.Join(*dir, "postfix")
		p, err := testenv.RunPostfix(pdir, d)
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo-backend:", err)
			d.Stop()
			os.Exit(1)
		}
		defer p.Stop()
		addrs += "smtp " + p.Addr + "\n"
	}
	if *ready != "" {
		if err := os.WriteFile(*ready, []byte(addrs), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "demo-backend:", err)
			return
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
}
