package loadgen

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Proto is the mail protocol spoken after the handshake.
type Proto string

// The protocols.
const (
	IMAP Proto = "imap" // greeting "* OK", LOGIN, LOGOUT
	POP3 Proto = "pop3" // greeting "+OK", AUTH PLAIN with an initial response, QUIT
	SMTP Proto = "smtp" // greeting "220", EHLO, AUTH PLAIN with an initial response, QUIT
)

// greeted reports whether line is the protocol's greeting; SMTP's may span lines
// ("220-…"), which the caller reads on with readReply.
func (p Proto) greeted(line string) bool {
	switch p {
	case POP3:
		return strings.HasPrefix(line, "+OK")
	case SMTP:
		return strings.HasPrefix(line, "220")
	default:
		return strings.HasPrefix(line, "* OK")
	}
}

// login sends the protocol's login and reads its answer; an error names the refusal.
func (p Proto) login(w io.Writer, br *bufio.Reader, user, pass string) error {
	plain := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	switch p {
	case POP3:
		if _, err := io.WriteString(w, "AUTH PLAIN "+plain+"\r\n"); err != nil {
			return fmt.Errorf("write AUTH: %w", err)
		}
		return expect(br, "+OK", "AUTH")
	case SMTP:
		// Pipelining EHLO and AUTH before the EHLO reply is what the gate refuses
		// before login; one round trip each, as a mail program does.
		if _, err := io.WriteString(w, "EHLO loadgen.invalid\r\n"); err != nil {
			return fmt.Errorf("write EHLO: %w", err)
		}
		if err := expect(br, "250", "EHLO"); err != nil {
			return err
		}
		if _, err := io.WriteString(w, "AUTH PLAIN "+plain+"\r\n"); err != nil {
			return fmt.Errorf("write AUTH: %w", err)
		}
		return expect(br, "235", "AUTH")
	default:
		if _, err := fmt.Fprintf(w, "a LOGIN %s %s\r\n", quote(user), quote(pass)); err != nil {
			return fmt.Errorf("write LOGIN: %w", err)
		}
		if err := tagged(br, "a "); err != nil {
			return fmt.Errorf("LOGIN: %w", err)
		}
		return nil
	}
}

// logout ends a logged-in session politely.
func (p Proto) logout(w io.Writer, br *bufio.Reader) error {
	var err error
	switch p {
	case POP3:
		io.WriteString(w, "QUIT\r\n")
		err = expect(br, "+OK", "QUIT")
	case SMTP:
		io.WriteString(w, "QUIT\r\n")
		err = expect(br, "221", "QUIT")
	default:
		io.WriteString(w, "b LOGOUT\r\n")
		if err = tagged(br, "b "); err != nil {
			err = fmt.Errorf("LOGOUT: %w", err)
		}
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// expect reads one reply (SMTP's "250-…" continuation lines included) and fails unless
// its last line starts with want.
func expect(br *bufio.Reader, want, cmd string) error {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		if len(line) >= 4 && line[3] == '-' && line[:3] == want[:min(3, len(want))] {
			continue
		}
		if !strings.HasPrefix(line, want) {
			return fmt.Errorf("%s: %q", cmd, trim(line))
		}
		return nil
	}
}
