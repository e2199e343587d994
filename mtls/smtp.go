package mtls

import (
	"context"
	"fmt"
	"net"
	"strings"
)

// smtp is the SMTP submission dialect (RFC 5321, submission of RFC 6409, STARTTLS of
// RFC 3207, AUTH of RFC 4954 with PLAIN of RFC 4616 and the LOGIN mechanism, the
// enhanced status codes of RFC 3463): before login the gate itself answers EHLO, HELO,
// STARTTLS (plain port only), AUTH PLAIN and LOGIN, RSET, NOOP and QUIT; the login
// goes through the shared core (session.login), then smtpbackend.go logs in to the
// backend (Postfix submission) and the session is spliced through the small filter
// of smtprelay.go.
type smtp struct{}

// smtpMaxDomain bounds the EHLO/HELO name: a domain is at most 255 octets
// (RFC 5321 §4.5.3.1.2), and the name is forwarded to the backend in its EHLO.
const smtpMaxDomain = 255

func (smtp) name() string { return "smtp" }

func (smtp) greet(s *session, tlsOn bool) error {
	return s.write("220 " + s.st.opts.SMTP.Hostname + " ESMTP imapgate ready\r\n")
}

// loggedIn relays the backend's own 235 line.
func (smtp) loggedIn(_, line string) string { return line + "\r\n" }

// reply spells a reply of the shared core as an SMTP reply: a refused login 535 5.7.8,
// a temporary trouble 454 4.7.0 (421 when the session ends), a certificate problem
// (IMAP's ALERT) 554 5.7.0 with the same text a person reads. The gate's own SMTP
// replies carry their reply and enhanced code in Code ("530 5.7.0").
func (smtp) reply(r *Reply, _ string) string {
	code := ""
	switch {
	case r.Code != "" && r.Code[0] >= '2' && r.Code[0] <= '5':
		code = r.Code
	case r.Code == "ALERT":
		code = "554 5.7.0"
	case r.Code == "AUTHENTICATIONFAILED":
		code = "535 5.7.8"
	case r.Status == "BYE" && r.Code == "UNAVAILABLE":
		code = "421 4.3.2"
	case r.Status == "BYE":
		code = "421 4.7.0"
	case r.Code == "UNAVAILABLE":
		code = "454 4.7.0"
	case r.Status == "BAD":
		code = "501 5.5.2"
	default:
		code = "554 5.7.0"
	}
	return code + " " + r.Text + "\r\n"
}

// smtpReply is one of the gate's own replies; BAD ones count towards
// limits.max_bad_commands, a BYE ends the session.
func smtpReply(status, code, text string) *Reply {
	return &Reply{Status: status, Code: code, Text: text}
}

// The SMTP replies of the gate's own commands.
var (
	smtpNoTLS        = smtpReply("NO", "530 5.7.0", "Must issue a STARTTLS command first, with your smartcard certificate.")
	smtpAuthRequired = smtpReply("NO", "530 5.7.0", "Authentication required")
	smtpNoHelo       = smtpReply("BAD", "503 5.5.1", "Send EHLO first.")
	smtpUnknown      = smtpReply("BAD", "502 5.5.1", "Command unknown or not allowed before login.")
	smtpTLSActive    = smtpReply("BAD", "503 5.5.1", "TLS is already active.")
	smtpMechanism    = smtpReply("BAD", "504 5.5.4", "Only AUTH PLAIN and AUTH LOGIN are supported.")
	smtpAuthAborted  = smtpReply("BAD", "501 5.7.0", "Authentication aborted.")
	smtpBadBase64    = smtpReply("BAD", "501 5.5.2", "Invalid base64 in AUTH.")
	smtpBadPlain     = smtpReply("BAD", "501 5.5.2", "AUTH PLAIN wants authzid NUL authcid NUL password.")
	smtpBadLogin     = smtpReply("BAD", "501 5.5.2", "AUTH LOGIN wants a user name.")
	smtpHeloUsage    = smtpReply("BAD", "501 5.5.4", "Syntax: EHLO hostname")
	smtpUsage        = smtpReply("BAD", "501 5.5.4", "Wrong arguments.")
	smtpControl      = smtpReply("BAD", "500 5.5.2", "Control characters are not allowed.")
	smtpTLSInject    = smtpReply("BYE", "554 5.5.1", "Data after STARTTLS before the TLS handshake; closing.")
)

// smtpCommand is one pre-auth command line: its verb (upper case) and the rest.
type smtpCommand struct {
	verb string
	arg  string // after the first space, as sent
}

// parseSMTP splits a command line: a verb of letters (RFC 5321 §4.1.1; XCLIENT and
// STARTTLS are the longest the gate knows), then the argument; the line is printable
// ASCII apart from bytes over 0x7f (a SMTPUTF8 name, a password).
func parseSMTP(line string) (smtpCommand, error) {
	for i := 0; i < len(line); i++ {
		if line[i] < 0x20 || line[i] == 0x7f {
			return smtpCommand{}, smtpControl
		}
	}
	verb, arg, _ := strings.Cut(line, " ")
	if len(verb) < 4 || len(verb) > 8 {
		return smtpCommand{}, smtpUnknown
	}
	for i := 0; i < len(verb); i++ {
		if c := verb[i] | 0x20; c < 'a' || c > 'z' {
			return smtpCommand{}, smtpUnknown
		}
	}
	return smtpCommand{verb: strings.ToUpper(verb), arg: arg}, nil
}

// smtpState is what the pre-auth loop remembers between commands.
type smtpState struct {
	ehlo bool // EHLO or HELO was answered since the last TLS start
}

// smtpLines is SMTP's side of the line loop (lineloop.go).
var smtpLines = lineDialect{
	startTLS:     "STARTTLS",
	tooLong:      "500 5.5.2 Line too long.\r\n",
	timeout:      "421 4.4.2 ",
	tooManyPlain: "421 4.7.0 Too many commands before STARTTLS.\r\n",
	tooManyBad:   "421 4.7.0 Too many invalid commands.\r\n",
}

// preauth is the SMTP session before AUTH as far as the gate serves it.
func (smtp) preauth(ctx context.Context, s *session) {
	var st smtpState
	d := smtpLines
	d.command = func(ctx context.Context, line string) (bool, error) {
		cmd, err := parseSMTP(line)
		if err != nil {
			return false, err
		}
		s.log.Debug("command", "event", "preauth", "command", smtpTraceName(cmd.verb))
		return s.smtpDispatch(ctx, cmd, &st)
	}
	s.lineLoop(ctx, &d)
}

func smtpTraceName(verb string) string {
	switch verb {
	case "EHLO", "HELO", "STARTTLS", "AUTH", "RSET", "NOOP", "QUIT", "MAIL", "RCPT", "DATA":
		return verb
	}
	return "other"
}

// smtpEHLO is the gate's EHLO reply: what a submission client needs before AUTH, as
// Postfix announces it; AUTH only once TLS is up, STARTTLS only before.
func (s *session) smtpEHLO(tlsOn bool) string {
	o := &s.st.opts.SMTP
	last := "STARTTLS"
	if tlsOn {
		last = "AUTH PLAIN LOGIN"
	}
	return fmt.Sprintf("250-%s\r\n250-PIPELINING\r\n250-SIZE %d\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 %s\r\n", o.Hostname, o.MaxMessageSize, last)
}

// smtpDispatch runs one command; done ends the loop (QUIT, a login, a lost client).
func (s *session) smtpDispatch(ctx context.Context, cmd smtpCommand, st *smtpState) (bool, error) {
	tlsOn := s.phase >= phaseTLS
	switch cmd.verb {
	case "EHLO", "HELO":
		name := strings.TrimRight(cmd.arg, " ")
		if name == "" || strings.Contains(name, " ") || len(name) > smtpMaxDomain {
			return false, smtpHeloUsage
		}
		st.ehlo = true
		s.client = name // forwarded in the backend's EHLO, and logged
		if cmd.verb == "HELO" {
			return false, s.write("250 " + s.st.opts.SMTP.Hostname + "\r\n")
		}
		return false, s.write(s.smtpEHLO(tlsOn))
	case "NOOP":
		return false, s.write("250 2.0.0 Ok\r\n")
	case "RSET":
		if cmd.arg != "" {
			return false, smtpUsage
		}
		return false, s.write("250 2.0.0 Ok\r\n")
	case "QUIT":
		s.write("221 2.0.0 Bye\r\n")
		return true, nil
	case "STARTTLS":
		if cmd.arg != "" {
			return false, smtpUsage
		}
		if tlsOn {
			return false, smtpTLSActive
		}
		done, err := s.upgradeTLS(ctx, "220 2.0.0 Ready to start TLS\r\n", smtpTLSInject)
		if !done && err == nil {
			// What was said in the clear is forgotten (RFC 3207 §4.2): EHLO again.
			*st = smtpState{}
		}
		return done, err
	case "AUTH":
		if !tlsOn {
			return false, smtpNoTLS
		}
		if !st.ehlo {
			return false, smtpNoHelo
		}
		return s.smtpAuth(ctx, cmd.arg)
	case "MAIL", "RCPT", "DATA", "BDAT":
		if !tlsOn {
			return false, smtpNoTLS
		}
		return false, smtpAuthRequired
	}
	return false, smtpUnknown
}

// smtpAuth is AUTH PLAIN (initial response, or "334 " and one line) and AUTH LOGIN
// (the user name as initial response or after "334 VXNlcm5hbWU6", then the password
// after "334 UGFzc3dvcmQ6"); "*" cancels.
func (s *session) smtpAuth(ctx context.Context, arg string) (bool, error) {
	mech, ir, hasIR := strings.Cut(arg, " ")
	switch strings.ToUpper(mech) {
	case "PLAIN":
		if !hasIR {
			line, done, err := s.smtpChallenge("")
			if done || err != nil {
				return done, err
			}
			ir = line
		}
		if ir == "=" {
			ir = ""
		}
		authzid, user, pass, r := decodePlain(ir)
		switch r {
		case nil:
		case pop3BadBase64:
			return false, smtpBadBase64
		default:
			return false, smtpBadPlain
		}
		return s.login(ctx, "", authzid, user, pass, "AUTH PLAIN")
	case "LOGIN":
		if !hasIR {
			line, done, err := s.smtpChallenge("VXNlcm5hbWU6") // "Username:"
			if done || err != nil {
				return done, err
			}
			ir = line
		}
		if ir == "=" {
			ir = ""
		}
		user, ok := decodeBase64(ir)
		if !ok {
			return false, smtpBadBase64
		}
		if user == "" {
			return false, smtpBadLogin
		}
		line, done, err := s.smtpChallenge("UGFzc3dvcmQ6") // "Password:"
		if done || err != nil {
			return done, err
		}
		pass, ok := decodeBase64(line)
		if !ok {
			return false, smtpBadBase64
		}
		return s.login(ctx, "", "", user, secret(pass), "AUTH LOGIN")
	case "":
		return false, smtpUsage
	}
	return false, smtpMechanism
}

// smtpChallenge sends "334 challenge" and reads the client's answer; done ends the
// session (the client is gone or sent too long a line).
func (s *session) smtpChallenge(challenge string) (string, bool, error) {
	if err := s.write("334 " + challenge + "\r\n"); err != nil {
		return "", true, nil
	}
	line, err := s.readPreAuthLine()
	if err != nil {
		s.lineReadError(&smtpLines, err)
		return "", true, nil
	}
	if line == "*" {
		return "", false, smtpAuthAborted
	}
	return line, false, nil
}

// ServeSMTP is Serve for SMTP submission (implicit TLS on 465, STARTTLS on 587), with
// the backend of Options.SMTP.
func (s *Server) ServeSMTP(ctx context.Context, ln net.Listener, mode Mode) error {
	return s.serve(ctx, ln, mode, smtp{})
}
