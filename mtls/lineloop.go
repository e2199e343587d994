package mtls

import (
	"context"
	"errors"
	"os"
	"time"
)

// lineDialect is what the pre-auth loop of a line-based protocol (POP3, SMTP: one
// command per line, no tags) needs to know of it: the lines that end a session, and
// its one-line command handler.
type lineDialect struct {
	startTLS     string // the STARTTLS command's name, for the log ("STLS", "STARTTLS")
	tooLong      string // the line for a line over the limit
	timeout      string // what comes before the autologout texts ("-ERR ", "421 4.4.2 ")
	tooManyPlain string // the line past limits.max_plain_commands
	tooManyBad   string // the line past limits.max_bad_commands
	// command parses and runs one line; done ends the loop (QUIT, a login, a lost
	// client), a *Reply error is answered (spelled by the protocol's reply).
	command func(ctx context.Context, line string) (done bool, err error)
}

// lineLoop reads and answers pre-auth command lines until the dialect's command ends
// it, the client is gone, a BYE, or a limit.
func (s *session) lineLoop(ctx context.Context, d *lineDialect) {
	for !s.killed.Load() {
		line, err := s.readPreAuthLine()
		if err != nil {
			s.lineReadError(d, err)
			return
		}
		if s.phase == phasePlain {
			if s.plain++; s.plain > s.st.opts.Limits.MaxPlainCommands {
				s.log.Info("connection closed", "event", "preauth", "result", "too_many_commands", "reason", "too many commands before "+d.startTLS)
				s.write(d.tooManyPlain)
				return
			}
		}
		done, err := d.command(ctx, line)
		if done {
			return
		}
		if err == nil {
			continue
		}
		var r *Reply
		if !errors.As(err, &r) {
			return // I/O: the client is gone
		}
		if s.write(s.say(r, "")) != nil || r.Status == "BYE" {
			return
		}
		if r.Status == "BAD" {
			if s.bad++; s.bad >= s.st.opts.MaxBadCommands {
				s.log.Info("connection closed", "event", "preauth", "result", "too_many_bad_commands", "reason", "too many invalid commands before login")
				s.write(d.tooManyBad)
				return
			}
		}
	}
}

// readPreAuthLine reads one line within the pre-auth deadlines and the line limit.
func (s *session) readPreAuthLine() (string, error) {
	s.raw.SetReadDeadline(s.preAuthDeadline())
	defer s.raw.SetReadDeadline(time.Time{})
	return readLine(s.br, s.wr.lim.MaxLine)
}

// lineReadError answers a line that could not be read; the session then ends.
func (s *session) lineReadError(d *lineDialect, err error) {
	var fe *errFatal
	switch {
	case errors.As(err, &fe):
		s.log.Info("connection closed", "event", "preauth", "result", "protocol_error", "reason", fe.text)
		s.write(d.tooLong)
	case errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(s.start.Add(s.st.opts.PreAuthTotal)):
		s.log.Info("connection closed", "event", "preauth", "result", "preauth_total", "reason", "no login within timeouts.preauth_total")
		s.write(d.timeout + byePreAuthTotal.Text + "\r\n")
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.write(d.timeout + byeAutologout.Text + "\r\n")
	}
}
