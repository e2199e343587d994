package testenv_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/testenv"
)

// TestPostfixSubmission: the private Postfix takes XCLIENT from 127.0.0.1, logs alice
// in through Dovecot's SASL, refuses her sending as bob (smtpd_sender_login_maps), and
// delivers her message to bob's INBOX over LMTP, where Dovecot's POP3 serves it.
func TestPostfixSubmission(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{POP3: true, Submission: true})
	p := testenv.StartPostfix(t, d)
	c, err := net.DialTimeout("tcp", p.Addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(c)
	// reply reads one SMTP reply (all its lines) and returns its last line.
	reply := func() string {
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("read: %v\n%s", err, p.Log())
			}
			if len(l) < 4 || l[3] != '-' {
				return strings.TrimRight(l, "\r\n")
			}
		}
	}
	step := func(cmd, want string) {
		t.Helper()
		if cmd != "" {
			fmt.Fprintf(c, "%s\r\n", cmd)
		}
		if got := reply(); !strings.HasPrefix(got, want) {
			t.Fatalf("%q: got %q, want %q\n%s", cmd, got, want, p.Log())
		}
	}
	step("", "220 ")
	step("EHLO gate.example.org", "250 ")
	step("XCLIENT ADDR=192.0.2.9 NAME=[UNAVAILABLE]", "220 ")
	step("EHLO gate.example.org", "250 ")
	step("AUTH PLAIN "+b64("\x00"+testenv.Alice.Name+"\x00"+testenv.Alice.Password), "235 ")
	step("MAIL FROM:<"+testenv.Bob.Name+">", "250 ")
	step("RCPT TO:<"+testenv.Bob.Name+">", "553 5.7.1")
	step("RSET", "250 ")
	step("MAIL FROM:<"+testenv.Alice.Name+">", "250 ")
	step("RCPT TO:<"+testenv.Bob.Name+">", "250 ")
	step("DATA", "354 ")
	step("From: alice@example.org\r\nTo: bob@example.org\r\nSubject: through postfix\r\n\r\nHello bob.\r\n.", "250 ")
	step("QUIT", "221 ")
	if !strings.Contains(p.Log(), "client=unknown[192.0.2.9]") {
		t.Errorf("Postfix did not take the XCLIENT address:\n%s", p.Log())
	}

	// Bob's INBOX over POP3 (Dovecot directly): the three seeded messages and ours.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if n := pop3Count(t, d, testenv.Bob); n == 4 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("bob has %d messages, want 4\n%s\n%s", n, p.Log(), d.Log())
		}
	}
}

func b64(s string) string {
	const enc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var b strings.Builder
	for i := 0; i < len(s); i += 3 {
		var n uint32
		k := min(3, len(s)-i)
		for j := 0; j < 3; j++ {
			n <<= 8
			if j < k {
				n |= uint32(s[i+j])
			}
		}
		for j := 0; j < 4; j++ {
			if j <= k {
				b.WriteByte(enc[(n>>(18-6*j))&63])
			} else {
				b.WriteByte('=')
			}
		}
	}
	return b.String()
}

// pop3Count logs u in to Dovecot's POP3 and returns STAT's message count.
func pop3Count(t *testing.T, d *testenv.Dovecot, u testenv.DovecotUser) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", d.POP3Addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	br.ReadString('\n')
	fmt.Fprintf(c, "USER %s\r\nPASS %s\r\nSTAT\r\nQUIT\r\n", u.Name, u.Password)
	br.ReadString('\n')
	if l, _ := br.ReadString('\n'); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("POP3 login as %s: %q", u.Name, l)
	}
	var n, size int
	l, _ := br.ReadString('\n')
	if _, err := fmt.Sscanf(l, "+OK %d %d", &n, &size); err != nil {
		t.Fatalf("STAT: %q", l)
	}
	return n
}
