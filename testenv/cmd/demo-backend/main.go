// Command demo-backend runs the private Dovecot of testenv for `make demo`: plain
// IMAP on a loopback address, with the demo users and a few messages each, until
// it is interrupted. It is a test fixture, not part of imapgate.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/imapgate/imapgate/testenv"
)

func main() {
	dir := flag.String("dir", "", "directory for Dovecot's config, mail and logs (required)")
	addr := flag.String("addr", "127.0.0.1:10143", "IMAP listen address (loopback)")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "demo-backend: give -dir")
		os.Exit(2)
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "demo-backend:", err)
		os.Exit(1)
	}
	d, err := testenv.RunDovecot(*dir, testenv.DovecotOptions{Addr: *addr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo-backend:", err)
		os.Exit(1)
	}
	for _, u := range d.Users {
		fmt.Printf("dovecot on %s: user %s password %s\n", d.Addr, u.Name, u.Password)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	d.Stop()
}
