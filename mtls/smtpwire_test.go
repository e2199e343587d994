package mtls

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
)

// FuzzParseSMTP feeds the SMTP pre-auth parser (the command line, then a SASL
// response): it never panics, a verb it accepts is 4 to 8 letters in upper case, the
// argument is the rest of the line, and no control character passes.
func FuzzParseSMTP(f *testing.F) {
	for _, s := range []string{"EHLO client.example.org", "HELO x", "AUTH PLAIN AGFsaWNlAHNlY3JldA==", "AUTH LOGIN YWxpY2U=",
		"auth plain =", "STARTTLS", "MAIL FROM:<a@b>", "XCLIENT ADDR=1.2.3.4", "RCPT TO:<\xff>", "DATA", "QUIT\x00", "EH", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		cmd, err := parseSMTP(line)
		if err == nil {
			if len(cmd.verb) < 4 || len(cmd.verb) > 8 || cmd.verb != strings.ToUpper(cmd.verb) {
				t.Fatalf("verb %q from %q", cmd.verb, line)
			}
			if want, _ := strings.CutPrefix(line[len(cmd.verb):], " "); cmd.arg != want {
				t.Fatalf("argument %q from %q", cmd.arg, line)
			}
			if strings.ContainsAny(line, "\x00\r\n\x7f") {
				t.Fatalf("control character accepted in %q", line)
			}
		}
		if _, ok := decodeBase64(line); ok && strings.Contains(line, " ") {
			t.Fatalf("base64 with blanks accepted: %q", line)
		}
	})
}

// backendModel is a submission server as liberal as any could be about lines (LF
// ends one, CRs before it do not matter, a leading blank does not hide a verb) that
// answers every command at once: 354 to DATA when accept says so, 250 to a message's
// end and to everything else. It records the verbs it took as commands.
type backendModel struct {
	net.Conn
	relay  *smtpRelay
	accept func() bool
	data   bool
	buf    []byte
	verbs  []string
}

func (m *backendModel) Write(p []byte) (int, error) {
	m.buf = append(m.buf, p...)
	for {
		i := bytes.IndexByte(m.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := strings.TrimRight(string(m.buf[:i]), "\r")
		m.buf = m.buf[i+1:]
		reply := "250 ok\r\n"
		switch {
		case m.data && line == ".":
			m.data = false
		case m.data:
			continue
		default:
			verb := smtpVerb([]byte(line))
			m.verbs = append(m.verbs, verb)
			if verb == "DATA" && m.accept() {
				m.data, reply = true, "354 go ahead\r\n"
			}
		}
		m.relay.down([]byte(reply))
	}
}

// FuzzSMTPRelay feeds the post-login filter client bytes, cut in two writes at a
// fuzzed place, against backendModel: no XCLIENT, XFORWARD, STARTTLS or BDAT ever
// reaches it as a command, whatever DATA, dots, CRs and LFs the client mixes in, and
// the filter never waits for an answer that is not coming (the model answers at once).
func FuzzSMTPRelay(f *testing.F) {
	for _, s := range []string{
		"MAIL FROM:<a>\r\nDATA\r\nXCLIENT ADDR=1.2.3.4\r\n.\r\nXCLIENT ADDR=1.2.3.4\r\n",
		"DATA\r\nhello\n.\nXFORWARD ADDR=1\r\n",
		"DATA\r\n.\r\r\n STARTTLS\r\n",
		"DATA\r\n..\r\nBDAT 1 LAST\r\n.\r\nbdat 2\r\n",
		"NOOP\r\nXCLIENT\x00 ADDR=1\r\n\txclient addr=2\r\n",
	} {
		f.Add([]byte(s), uint8(7), uint8(0b1010))
	}
	hidden := map[string]bool{"XCLIENT": true, "XFORWARD": true, "STARTTLS": true, "BDAT": true}
	f.Fuzz(func(t *testing.T, in []byte, cut uint8, accepts uint8) {
		r := newSMTPRelay(nil, bufio.NewReader(strings.NewReader("")), slog.New(slog.NewTextHandler(io.Discard, nil)), 8192)
		n := 0
		m := &backendModel{relay: r, accept: func() bool { n++; return accepts>>(n%8)&1 == 1 }}
		r.Conn = m
		k := min(int(cut), len(in))
		for _, part := range [][]byte{in[:k], in[k:]} {
			if _, err := r.Write(part); err != nil {
				if err == errSMTPLine {
					return
				}
				t.Fatalf("Write: %v", err)
			}
		}
		for _, v := range m.verbs {
			if hidden[v] {
				t.Fatalf("%s reached the backend as a command from %q (verbs %q)", v, in, m.verbs)
			}
		}
	})
}

// FuzzSMTPReplies feeds the backend → client side of the filter: it never panics,
// never lets an EHLO line of a hidden extension through, and keeps a multi-line reply
// ending in a final line.
func FuzzSMTPReplies(f *testing.F) {
	for _, s := range []string{
		"250-mail.example.org\r\n250-PIPELINING\r\n250-XCLIENT NAME ADDR\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n",
		"250-a\r\n250-STARTTLS\r\n250 XFORWARD NAME\r\n354 go\r\n",
		"250 CHUNKING\r\n", "250-x\n250 binarymime\n", "5",
	} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, cut uint8) {
		r := newSMTPRelay(nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), 8192)
		k := min(int(cut), len(in))
		for _, part := range [][]byte{in[:k], in[k:]} {
			if err := r.down(part); err != nil {
				return
			}
		}
		out := string(r.out)
		if out != "" && !strings.HasSuffix(out, "\n") {
			t.Fatalf("a partial line passed on: %q from %q", out, in)
		}
		lines := strings.SplitAfter(out, "\n")
		for _, l := range lines {
			if len(l) > 4 && strings.HasPrefix(l, "250-") && smtpHidden([]byte(l[4:])) {
				t.Fatalf("hidden extension %q passed from %q", l, in)
			}
		}
		// A continuation line is held until the next line: with none held, what was
		// passed on never ends inside a reply.
		if r.held == nil && len(lines) >= 2 {
			if last := lines[len(lines)-2]; len(last) >= 4 && last[3] == '-' {
				t.Fatalf("reply passed on without its final line: %q from %q", out, in)
			}
		}
	})
}
