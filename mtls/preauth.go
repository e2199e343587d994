package mtls

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"os"
	"strings"
	"time"
)

// Capabilities the front announces before login. The backend's own post-login list is
// relayed in the tagged OK of LOGIN/AUTHENTICATE.
const (
	capsTLS   = "IMAP4rev1 SASL-IR ID LITERAL+ AUTH=PLAIN"
	capsPlain = "IMAP4rev1 STARTTLS LOGINDISABLED ID LITERAL+"
)

// phase is where a session's pre-auth loop stands. It only moves forward.
type phase int

const (
	// phasePlain: connected on the STARTTLS port, no TLS yet. Only CAPABILITY, NOOP,
	// ID, LOGOUT and STARTTLS are served; a login is refused (PRIVACYREQUIRED).
	phasePlain phase = iota
	// phaseTLS: TLS is up and the client certificate accepted; waiting for a login.
	phaseTLS
	// phaseLoggedIn: the backend accepted the login; the loop ends and run splices.
	phaseLoggedIn
)

// loop reads and answers pre-auth commands until LOGOUT, a splice, an error or BYE.
func (s *session) loop(ctx context.Context) {
	for {
		if s.killed.Load() {
			return
		}
		s.raw.SetReadDeadline(s.preAuthDeadline())
		cmd, err := s.wr.ReadCommand()
		if err != nil {
			s.readError(err)
			if s.endAfterBad(err) {
				return
			}
			continue
		}
		s.raw.SetReadDeadline(time.Time{})
		if s.phase == phasePlain {
			if s.plain++; s.plain > s.st.opts.Limits.MaxPlainCommands {
				s.log.Info("connection closed", "event", "preauth", "result", "too_many_commands", "reason", "too many commands before STARTTLS")
				s.write(byeTooManyPlain.line("*"))
				return
			}
		}
		// The debug trace names the command only: arguments may be credentials, and
		// so may a tag or a command name if a client's framing went wrong (a password
		// sent where a command was expected), so neither is logged as sent.
		if s.log.Enabled(ctx, slog.LevelDebug) { // its arguments cost even when it is off
			s.log.Debug("command", "event", "preauth", "command", traceName(cmd.name), "args", len(cmd.args))
		}
		done, err := s.dispatch(ctx, cmd)
		if err != nil {
			var r *Reply
			if !errors.As(err, &r) {
				return // I/O error: the client is gone
			}
			if s.write(r.line(cmd.tag)) != nil || r.Status == "BYE" {
				return
			}
			if r.Status == "BAD" {
				s.bad++
				if s.tooManyBad() {
					return
				}
			}
			continue
		}
		if done {
			return
		}
	}
}

// traceName is the command name for the debug trace: one the front serves, or "other".
func traceName(name string) string {
	switch name {
	case "CAPABILITY", "NOOP", "LOGOUT", "ID", "STARTTLS", "LOGIN", "AUTHENTICATE":
		return name
	}
	return "other"
}

// readError answers a command that could not be read.
func (s *session) readError(err error) {
	var we *errWire
	var fe *errFatal
	switch {
	case errors.As(err, &we):
		tag := we.tag
		if tag == "" {
			tag = "*"
		}
		r := &Reply{Status: "BAD", Code: we.code, Text: we.text}
		s.write(r.line(tag))
	case errors.As(err, &fe):
		s.log.Info("connection closed", "event", "preauth", "result", "protocol_error", "reason", fe.text)
		s.write((&Reply{Status: "BYE", Code: fe.code, Text: fe.text}).line("*"))
	case errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(s.start.Add(s.st.opts.PreAuthTotal)):
		s.log.Info("connection closed", "event", "preauth", "result", "preauth_total", "reason", "no login within timeouts.preauth_total")
		s.write(byePreAuthTotal.line("*"))
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.write(byeAutologout.line("*"))
	}
}

// endAfterBad reports whether the loop must end after a read error.
func (s *session) endAfterBad(err error) bool {
	var we *errWire
	if !errors.As(err, &we) {
		return true
	}
	s.bad++
	return s.tooManyBad()
}

func (s *session) tooManyBad() bool {
	if s.bad < s.st.opts.MaxBadCommands {
		return false
	}
	s.log.Info("connection closed", "event", "preauth", "result", "too_many_bad_commands", "reason", "too many invalid commands before login")
	s.write(byeTooManyBad.line("*"))
	return true
}

// dispatch runs one parsed command: first the arguments are checked, then whether the
// command is allowed now, then it is done.
func (s *session) dispatch(ctx context.Context, cmd *command) (done bool, err error) {
	tlsOn := s.phase >= phaseTLS
	switch cmd.name {
	case "CAPABILITY":
		if len(cmd.args) != 0 {
			return false, replyBad("CAPABILITY takes no arguments.")
		}
		caps := capsPlain
		if tlsOn {
			caps = capsTLS
		}
		return false, s.write("* CAPABILITY " + caps + "\r\n" + cmd.tag + " OK CAPABILITY completed.\r\n")
	case "NOOP":
		if len(cmd.args) != 0 {
			return false, replyBad("NOOP takes no arguments.")
		}
		return false, s.write(cmd.tag + " OK NOOP completed.\r\n")
	case "LOGOUT":
		if len(cmd.args) != 0 {
			return false, replyBad("LOGOUT takes no arguments.")
		}
		s.write(byeLogout.line("*") + cmd.tag + " OK LOGOUT completed.\r\n")
		return true, nil
	case "ID":
		return false, s.cmdID(cmd)
	case "STARTTLS":
		if len(cmd.args) != 0 {
			return false, replyBad("STARTTLS takes no arguments.")
		}
		if s.phase != phasePlain {
			return false, replyBad("TLS is already active.")
		}
		// Anything said in the clear may come from whoever sits on the path: the TLS
		// session starts over (RFC 3501 §6.2.1), with no client name and no BADs.
		return s.upgradeTLS(ctx, cmd.tag+" OK Begin TLS negotiation now.\r\n", byeStartTLSInject)
	case "LOGIN":
		if len(cmd.args) != 2 || !isAstring(cmd.args[0]) || !isAstring(cmd.args[1]) {
			return false, replyBad("Usage: LOGIN user password")
		}
		if !tlsOn {
			return false, noPrivacyRequired
		}
		return s.login(ctx, cmd.tag, "", cmd.args[0].s, secret(cmd.args[1].s), "LOGIN")
	case "AUTHENTICATE":
		return s.cmdAuthenticate(ctx, cmd, tlsOn)
	default:
		return false, replyBad("Command unknown or not allowed before login.")
	}
}

func isAstring(a arg) bool { return a.kind == argAtom || a.kind == argString }

// cmdID answers ID (RFC 2971) and remembers the client's name for the log.
func (s *session) cmdID(cmd *command) error {
	if len(cmd.args) != 1 {
		return replyBad("Usage: ID (\"name\" \"value\" …) or ID NIL")
	}
	a := cmd.args[0]
	switch a.kind {
	case argNil:
	case argList:
		if len(a.list)%2 != 0 || len(a.list) > 60 {
			return replyBad("ID wants at most 30 name/value pairs.")
		}
		var name, version string
		for i := 0; i < len(a.list); i += 2 {
			k, v := a.list[i], a.list[i+1]
			if k.kind != argString || (v.kind != argString && v.kind != argNil) || len(k.s) > 30 || len(v.s) > 1024 {
				return replyBad("ID names are strings of at most 30 bytes, values strings of at most 1024 bytes or NIL.")
			}
			switch strings.ToLower(k.s) {
			case "name":
				name = v.s
			case "version":
				version = v.s
			}
		}
		s.client = strings.TrimSpace(name + " " + version)
	default:
		return replyBad("Usage: ID (\"name\" \"value\" …) or ID NIL")
	}
	return s.write("* ID (\"name\" \"imapgate\")\r\n" + cmd.tag + " OK ID completed.\r\n")
}

// cmdAuthenticate handles AUTHENTICATE PLAIN with an initial response (SASL-IR) or in
// the continuation form Thunderbird uses: "82 authenticate PLAIN", wait for "+ ", one
// base64 line.
func (s *session) cmdAuthenticate(ctx context.Context, cmd *command, tlsOn bool) (bool, error) {
	if len(cmd.args) < 1 || len(cmd.args) > 2 || cmd.args[0].kind != argAtom {
		return false, replyBad("Usage: AUTHENTICATE PLAIN [initial-response]")
	}
	if !strings.EqualFold(cmd.args[0].s, "PLAIN") {
		return false, noOnlyPlain
	}
	if !tlsOn {
		return false, noPrivacyRequired
	}
	var b64 string
	if len(cmd.args) == 2 {
		if cmd.args[1].kind != argAtom {
			return false, replyBad("The initial response must be base64.")
		}
		b64 = cmd.args[1].s
		if b64 == "=" {
			b64 = ""
		}
	} else {
		if err := s.write("+ \r\n"); err != nil {
			return true, nil
		}
		s.raw.SetReadDeadline(s.preAuthDeadline())
		line, err := readLine(s.br, s.wr.lim.MaxLine)
		s.raw.SetReadDeadline(time.Time{})
		if err != nil {
			var fe *errFatal
			if errors.As(err, &fe) {
				return false, &Reply{Status: "BYE", Code: fe.code, Text: fe.text}
			}
			return true, nil
		}
		if line == "*" {
			return false, replyBad("AUTHENTICATE cancelled.")
		}
		b64 = line
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		// Some clients leave out the padding.
		raw, err = base64.RawStdEncoding.DecodeString(b64)
	}
	if err != nil {
		return false, replyBad("Invalid base64 in AUTHENTICATE.")
	}
	parts := strings.Split(string(raw), "\x00")
	if len(parts) != 3 || parts[1] == "" {
		return false, replyBad("AUTHENTICATE PLAIN wants authzid NUL authcid NUL password.")
	}
	return s.login(ctx, cmd.tag, parts[0], parts[1], secret(parts[2]), "AUTHENTICATE PLAIN")
}
