package mtls_test

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/mtls"
	"github.com/imapgate/imapgate/testenv"
)

// TestBackendHostile: a backend that misbehaves never gets a user logged in without
// its tagged OK to this LOGIN: a PREAUTH greeting, a missing "+" for a literal, an OK
// with an old tag, an untagged OK, a BYE. Each ends in NO [UNAVAILABLE] within
// backend.login_timeout. Stubs stand in for Dovecot, which does not misbehave.
func TestBackendHostile(t *testing.T) {
	// answer runs after the greeting and the ID exchange, with the LOGIN line read.
	for _, tc := range []struct {
		name   string
		greet  string
		pass   string // the password the client sends (as a literal when it must be)
		answer func(c net.Conn, br *bufio.Reader, login string)
		log    string
	}{
		{"preauth greeting", "* PREAUTH [CAPABILITY IMAP4rev1] logged in already\r\n", testenv.Alice.Password, nil, "unexpected greeting"},
		{"no continuation for a literal", "", "caf\xc3\xa9-secret", func(c net.Conn, br *bufio.Reader, login string) {
			<-time.After(5 * time.Second) // never "+"
		}, "backend: LOGIN"},
		{"ok with an old tag", "", testenv.Alice.Password, func(c net.Conn, br *bufio.Reader, login string) {
			io.WriteString(c, "g1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n")
			<-time.After(5 * time.Second)
		}, "no answer to LOGIN"},
		{"untagged ok", "", testenv.Alice.Password, func(c net.Conn, br *bufio.Reader, login string) {
			io.WriteString(c, "* OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n")
			<-time.After(5 * time.Second)
		}, "no answer to LOGIN"},
		{"bye", "", testenv.Alice.Password, func(c net.Conn, br *bufio.Reader, login string) {
			io.WriteString(c, "* BYE going away\r\n")
		}, "answered * BYE going away to LOGIN"}, // front: an answer to a sent LOGIN is a refusal (backend_refused)
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := serveStub(t, localListen(t), func(c net.Conn) {
				greet := tc.greet
				if greet == "" {
					greet = "* OK [CAPABILITY IMAP4rev1 LITERAL+] stub\r\n"
				}
				io.WriteString(c, greet)
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					tag, rest, _ := strings.Cut(line, " ")
					if strings.HasPrefix(strings.ToUpper(rest), "ID") {
						io.WriteString(c, tag+" OK ID completed.\r\n")
						continue
					}
					if tc.answer != nil {
						tc.answer(c, br, line)
					}
					return
				}
			})
			e := newEnv(t, envOptions{backendAddr: ln.Addr().String(), mod: func(o *mtls.Options) {
				o.Backend.LoginTimeout = 500 * time.Millisecond
				o.Backend.DialTimeout = 2 * time.Second
			}})
			c := e.dial(t, e.alice)
			c.line()
			pass := tc.pass
			if _, quotable := quoteOK(pass); quotable {
				c.send("a LOGIN " + testenv.Alice.Name + " \"" + pass + "\"\r\n")
			} else {
				c.send("a LOGIN " + testenv.Alice.Name + " {" + strconv.Itoa(len(pass)) + "+}\r\n" + pass + "\r\n")
			}
			if got := c.line(); !strings.HasPrefix(got, "a NO [UNAVAILABLE]") {
				t.Fatalf("login through a hostile backend: %q", got)
			}
			if !strings.Contains(e.logs.String(), tc.log) {
				t.Errorf("log lacks %q", tc.log)
			}
		})
	}
}

func quoteOK(s string) (string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 || s[i] < 0x20 || s[i] == '"' || s[i] == '\\' {
			return "", false
		}
	}
	return s, true
}
