package mtls_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/mtls"
)

// backendScript is a hostile or odd backend, read from testdata/backend/*.txt:
//
//	greet: LINE      the greeting (one line each; default "* OK … stub ready")
//	CMD: LINE        a line sent in answer to the next CMD (LOGIN, ID, …); after a
//	                 line starting "+" the stub reads one line (the literal) first;
//	                 "CMD:" alone makes the stub answer CMD with nothing
//	password: TEXT   the password the client sends (default "secret")
//	want: PREFIX     the start of the client's answer to its LOGIN
//	result: WORD     the log result of the login
//
// A command without lines is answered "TAG OK done".
type backendScript struct {
	greet            []string
	answers          map[string][]string
	password         string
	want, wantResult string
}

func readBackendScript(t *testing.T, path string) *backendScript {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := &backendScript{answers: map[string][]string{}, password: "secret"}
	for n, l := range strings.Split(string(data), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		key, val, ok := strings.Cut(l, ":")
		if !ok {
			t.Fatalf("%s line %d: want KEY: value", path, n+1)
		}
		val = strings.TrimPrefix(val, " ")
		switch key {
		case "greet":
			s.greet = append(s.greet, val)
		case "password":
			s.password = val
		case "want":
			s.want = val
		case "result":
			s.wantResult = val
		default:
			if key != strings.ToUpper(key) {
				t.Fatalf("%s line %d: unknown key %q", path, n+1, key)
			}
			if _, seen := s.answers[key]; !seen {
				s.answers[key] = nil
			}
			if val != "" {
				s.answers[key] = append(s.answers[key], val)
			}
		}
	}
	if s.want == "" || s.wantResult == "" {
		t.Fatalf("%s: want and result are required", path)
	}
	if len(s.greet) == 0 {
		s.greet = []string{"* OK [CAPABILITY IMAP4rev1] stub ready"}
	}
	return s
}

// serve plays the script on one backend connection.
func (s *backendScript) serve(c net.Conn) {
	c.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(c)
	for _, g := range s.greet {
		io.WriteString(c, g+"\r\n")
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return
		}
		tag, rest, _ := strings.Cut(strings.TrimRight(l, "\r\n"), " ")
		cmd, _, _ := strings.Cut(rest, " ")
		lines, scripted := s.answers[strings.ToUpper(cmd)]
		if !scripted {
			io.WriteString(c, tag+" OK done\r\n")
			continue
		}
		for _, a := range lines {
			io.WriteString(c, a+"\r\n")
			if strings.HasPrefix(a, "+") {
				if _, err := br.ReadString('\n'); err != nil {
					return
				}
			}
		}
	}
}

// TestHostileBackends replays every testdata/backend/*.txt: a backend that greets
// with PREAUTH, never sends "+", answers with an old or an early tag, says BYE, BAD or
// NO with odd codes. fail_* must never log the user in; good_* must. A stub backend,
// since Dovecot cannot be made to misbehave so.
func TestHostileBackends(t *testing.T) {
	files, err := filepath.Glob("testdata/backend/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no backend scripts: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		t.Run(name, func(t *testing.T) {
			good := strings.HasPrefix(name, "good_")
			if !good && !strings.HasPrefix(name, "fail_") {
				t.Fatal("a backend script's name starts with good_ or fail_")
			}
			script := readBackendScript(t, f)
			ln := serveStub(t, localListen(t), script.serve)
			e := newEnv(t, envOptions{backendAddr: ln.Addr().String(), mod: func(o *mtls.Options) {
				o.Backend.DialTimeout = 2 * time.Second
				o.Backend.LoginTimeout = time.Second
			}})
			c := e.dial(t, e.alice)
			c.line()
			c.send(fmt.Sprintf("a LOGIN alice@example.org {%d+}\r\n%s\r\n", len(script.password), script.password))
			got := c.line()
			if !strings.HasPrefix(got, script.want) {
				t.Fatalf("login: %q, want %q…", got, script.want)
			}
			if loggedIn := loginOK.MatchString(got); loggedIn != good {
				t.Fatalf("login: %q; logged in %v, want %v", got, loggedIn, good)
			}
			waitForLine(t, e.logs, `"event":"login"`, `"result":"`+script.wantResult+`"`)
		})
	}
}
