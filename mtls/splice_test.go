package mtls_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// TestSpliceRealDovecot: a logged-in session waiting in IDLE holds no goroutine for
// the backend's side (idlewait_linux.go); Dovecot's "* N EXISTS" must still wake it.
// Another session APPENDs a 1 MiB message (the client's side grows its buffer while
// the literal streams), the idle one is woken, and FETCHes it back byte for byte
// (the backend's side copies a long burst and goes back to waiting).
func TestSpliceRealDovecot(t *testing.T) {
	e := newEnv(t, envOptions{})
	dial := func(h *imapclient.UnilateralDataHandler) *imapclient.Client {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", e.addr, e.clientTLS(e.alice))
		if err != nil {
			t.Fatal(err)
		}
		c := imapclient.New(conn, &imapclient.Options{UnilateralDataHandler: h})
		t.Cleanup(func() { c.Close() })
		if err := c.Login("alice@example.org", "alice-secret").Wait(); err != nil {
			t.Fatalf("login: %v", err)
		}
		return c
	}
	updates := make(chan uint32, 16)
	idler := dial(&imapclient.UnilateralDataHandler{Mailbox: func(d *imapclient.UnilateralDataMailbox) {
		if d.NumMessages != nil {
			updates <- *d.NumMessages
		}
	}})
	sel, err := idler.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	idle, err := idler.Idle()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // let the idle session go quiet

	var msg bytes.Buffer
	fmt.Fprintf(&msg, "From: bob@example.org\r\nTo: alice@example.org\r\nSubject: big\r\n\r\n")
	for i := 0; msg.Len() < 1<<20; i++ {
		fmt.Fprintf(&msg, "line %07d of a large message, to cross many TLS records and buffers\r\n", i)
	}
	appender := dial(nil)
	cmd := appender.Append("INBOX", int64(msg.Len()), nil)
	if _, err := cmd.Write(msg.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.Wait(); err != nil {
		t.Fatalf("append: %v", err)
	}

	select {
	case n := <-updates:
		if n != sel.NumMessages+1 {
			t.Fatalf("EXISTS %d, want %d", n, sel.NumMessages+1)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the idle session was not woken by the backend's EXISTS")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := idler.Fetch(imap.SeqSetNum(sel.NumMessages+1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch: %v %v", len(msgs), err)
	}
	var body []byte
	for _, b := range msgs[0].BodySection {
		body = b.Bytes
	}
	if !bytes.Equal(body, msg.Bytes()) {
		t.Fatalf("fetched %d bytes, want the %d appended, byte for byte", len(body), msg.Len())
	}
	// And the session is still alive for small commands after the burst.
	if err := idler.Noop().Wait(); err != nil {
		t.Fatalf("NOOP after the FETCH: %v", err)
	}
}
