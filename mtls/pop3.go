package mtls

import (
	"context"
	"encoding/base64"
	"strings"
)

// pop3 is the POP3 dialect (RFC 1939, CAPA and response codes of RFC 2449, STLS of
// RFC 2595, AUTH of RFC 5034, the codes of RFC 3206): before login the gate itself
// answers CAPA, USER/PASS, AUTH PLAIN, STLS (plain port only) and QUIT; the login
// goes through the shared core (session.login), then pop3backend.go logs in to the
// backend's POP3 and the session is spliced.
type pop3 struct{}

// The CAPA lists before login. The backend's own list, after login, is the client's
// to ask for (RFC 2449: capabilities may change after login).
const (
	pop3CapsTLS   = "CAPA\r\nUSER\r\nSASL PLAIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nIMPLEMENTATION imapgate\r\n"
	pop3CapsPlain = "CAPA\r\nSTLS\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nIMPLEMENTATION imapgate\r\n"
)

func (pop3) name() string { return "pop3" }

func (pop3) greet(s *session, tlsOn bool) error {
	if tlsOn {
		return s.write("+OK imapgate POP3 ready.\r\n")
	}
	return s.write("+OK imapgate POP3 ready; STLS with your smartcard certificate first.\r\n")
}

func (pop3) loggedIn(_, line string) string { return line + "\r\n" }

// reply spells a reply of the shared core as a POP3 -ERR with the response codes of
// RFC 3206: a refused login [AUTH], a temporary trouble [SYS/TEMP], a certificate
// problem (IMAP's ALERT) [SYS/PERM] with the same text a person reads.
func (pop3) reply(r *Reply, _ string) string {
	code := ""
	switch r.Code {
	case "AUTHENTICATIONFAILED":
		code = "[AUTH] "
	case "UNAVAILABLE":
		code = "[SYS/TEMP] "
	case "ALERT":
		code = "[SYS/PERM] "
	}
	return "-ERR " + code + r.Text + "\r\n"
}

// The POP3 replies of the gate's own commands.
var (
	pop3NoTLS        = &Reply{Status: "NO", Text: "Use STLS with your smartcard certificate first."}
	pop3NoUser       = &Reply{Status: "BAD", Text: "Send USER first."}
	pop3OnlyPlain    = &Reply{Status: "NO", Text: "Only AUTH PLAIN is supported."}
	pop3Unknown      = &Reply{Status: "BAD", Text: "Command unknown or not allowed before login."}
	pop3TLSActive    = &Reply{Status: "BAD", Text: "TLS is already active."}
	pop3AuthCanceled = &Reply{Status: "BAD", Text: "AUTH cancelled."}
	pop3BadBase64    = &Reply{Status: "BAD", Text: "Invalid base64 in AUTH."}
	pop3BadPlain     = &Reply{Status: "BAD", Text: "AUTH PLAIN wants authzid NUL authcid NUL password."}
	pop3Usage        = &Reply{Status: "BAD", Text: "Wrong arguments."}
	pop3STLSInject   = &Reply{Status: "BYE", Text: "Data after STLS before the TLS handshake; closing."}
)

// pop3Command is one pre-auth command line: its keyword (upper case) and the rest.
type pop3Command struct {
	name string
	arg  string // after the first space, as sent (a PASS may hold spaces)
}

// parsePOP3 splits a command line. Keywords are 3 or 4 letters (RFC 1939 §3), the
// line printable ASCII apart from a password's bytes over 0x7f.
func parsePOP3(line string) (pop3Command, error) {
	name, arg, _ := strings.Cut(line, " ")
	if len(name) < 3 || len(name) > 4 {
		return pop3Command{}, pop3Unknown
	}
	for i := 0; i < len(name); i++ {
		if c := name[i] | 0x20; c < 'a' || c > 'z' {
			return pop3Command{}, pop3Unknown
		}
	}
	for i := 0; i < len(line); i++ {
		if line[i] < 0x20 || line[i] == 0x7f {
			return pop3Command{}, &Reply{Status: "BAD", Text: "Control characters are not allowed."}
		}
	}
	return pop3Command{name: strings.ToUpper(name), arg: arg}, nil
}

// pop3Lines is POP3's side of the line loop (lineloop.go).
var pop3Lines = lineDialect{
	startTLS:     "STLS",
	tooLong:      "-ERR Line too long.\r\n",
	timeout:      "-ERR ",
	tooManyPlain: "-ERR Too many commands before STLS.\r\n",
	tooManyBad:   "-ERR Too many invalid commands.\r\n",
}

// preauth is POP3's AUTHORIZATION state as far as the gate serves it.
func (pop3) preauth(ctx context.Context, s *session) {
	user := ""
	d := pop3Lines
	d.command = func(ctx context.Context, line string) (bool, error) {
		cmd, err := parsePOP3(line)
		if err != nil {
			return false, err
		}
		s.log.Debug("command", "event", "preauth", "command", pop3TraceName(cmd.name))
		return s.pop3Dispatch(ctx, cmd, &user)
	}
	s.lineLoop(ctx, &d)
}

func pop3TraceName(name string) string {
	switch name {
	case "CAPA", "USER", "PASS", "AUTH", "STLS", "QUIT":
		return name
	}
	return "other"
}

// pop3Dispatch runs one command; done ends the loop (QUIT, a login, a lost client).
func (s *session) pop3Dispatch(ctx context.Context, cmd pop3Command, user *string) (bool, error) {
	tlsOn := s.phase >= phaseTLS
	switch cmd.name {
	case "CAPA":
		caps := pop3CapsPlain
		if tlsOn {
			caps = pop3CapsTLS
		}
		return false, s.write("+OK Capability list follows.\r\n" + caps + ".\r\n")
	case "QUIT":
		s.write("+OK Logging out.\r\n")
		return true, nil
	case "STLS":
		if cmd.arg != "" {
			return false, pop3Usage
		}
		if tlsOn {
			return false, pop3TLSActive
		}
		done, err := s.upgradeTLS(ctx, "+OK Begin TLS negotiation now.\r\n", pop3STLSInject)
		if !done && err == nil {
			*user = ""
		}
		return done, err
	case "USER":
		if !tlsOn {
			return false, pop3NoTLS
		}
		if cmd.arg == "" || strings.ContainsAny(cmd.arg, " ") {
			return false, pop3Usage
		}
		*user = cmd.arg
		return false, s.write("+OK\r\n")
	case "PASS":
		if !tlsOn {
			return false, pop3NoTLS
		}
		if *user == "" {
			return false, pop3NoUser
		}
		u := *user
		*user = ""
		return s.login(ctx, "", "", u, secret(cmd.arg), "USER")
	case "AUTH":
		if !tlsOn {
			return false, pop3NoTLS
		}
		return s.pop3Auth(ctx, cmd.arg)
	}
	return false, pop3Unknown
}

// pop3Auth is AUTH PLAIN with an initial response or a continuation ("+ ", one
// base64 line, "*" cancels); a bare AUTH lists the mechanism.
func (s *session) pop3Auth(ctx context.Context, arg string) (bool, error) {
	if arg == "" {
		return false, s.write("+OK\r\nPLAIN\r\n.\r\n")
	}
	mech, ir, hasIR := strings.Cut(arg, " ")
	if !strings.EqualFold(mech, "PLAIN") {
		return false, pop3OnlyPlain
	}
	if !hasIR {
		if err := s.write("+ \r\n"); err != nil {
			return true, nil
		}
		line, err := s.readPreAuthLine()
		if err != nil {
			s.lineReadError(&pop3Lines, err)
			return true, nil
		}
		if line == "*" {
			return false, pop3AuthCanceled
		}
		ir = line
	}
	if ir == "=" {
		ir = ""
	}
	authzid, user, pass, r := decodePlain(ir)
	if r != nil {
		return false, r
	}
	return s.login(ctx, "", authzid, user, pass, "AUTH PLAIN")
}

// decodePlain decodes a SASL PLAIN response (RFC 4616), padded or not.
func decodePlain(b64 string) (authzid, user string, pass secret, r *Reply) {
	raw, ok := decodeBase64(b64)
	if !ok {
		return "", "", "", pop3BadBase64
	}
	parts := strings.Split(raw, "\x00")
	if len(parts) != 3 || parts[1] == "" {
		return "", "", "", pop3BadPlain
	}
	return parts[0], parts[1], secret(parts[2]), nil
}

// decodeBase64 decodes one SASL line, padded or not.
func decodeBase64(b64 string) (string, bool) {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		raw, err = base64.RawStdEncoding.DecodeString(b64)
	}
	return string(raw), err == nil
}
