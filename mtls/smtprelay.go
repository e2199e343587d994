package mtls

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// smtpRelay is the backend of a logged-in SMTP session as the splice sees it: a
// net.Conn whose Write (client → backend) and Read (backend → client) pass a small
// filter, so that a card holder cannot spoof what the gate vouches for.
//
// Client → backend, outside a message: XCLIENT and XFORWARD (the gate's address is
// trusted to set the client's address and name), STARTTLS (the backend link is the
// gate's) and BDAT (CHUNKING is not announced, and its chunks could not be told from
// commands) are replaced by a verb no server knows, so the backend answers it (Postfix:
// "500 5.5.2 Error: command not recognized") in the right place of a pipelined
// exchange, and nothing of them reaches it. Inside a
// message (after DATA was answered 354, until the line "."), bytes pass untouched
// and are never parsed as commands. Whether DATA was accepted is the backend's
// answer, not a guess: after DATA, and after the ".", the filter forwards nothing
// more until the backend has answered every command sent so far (DATA is the last
// command of a pipelined group, RFC 2920, so clients wait there anyway). A message's
// end is taken as liberally as any backend could take it (a "." line ended by LF,
// with or without CRs): a backend stricter than that holds the session until
// smtpReplyTimeout, but body bytes are never taken for commands by the backend
// while the filter thinks them a message.
//
// Backend → client: every line is a reply (a server sends no message data). The EHLO
// keywords the client must not use (CHUNKING, BINARYMIME, XCLIENT, XFORWARD,
// STARTTLS) are taken out; final reply lines are counted for the waits above.
type smtpRelay struct {
	net.Conn // the backend (TLS or TCP): Close and the deadlines pass through
	src      *bufio.Reader
	log      *slog.Logger
	maxLine  int

	// Client → backend: only the splice's upstream goroutine touches these.
	data bool   // inside a message
	bol  bool   // inside a message: at the start of a line
	dot  bool   // inside a message: the line so far is "." and CRs
	part []byte // outside a message: a command line not yet ended

	// Backend → client: only the downstream goroutine touches these.
	rbuf  []byte
	dpart []byte // a reply line not yet ended
	held  []byte // the last continuation line of a 250 reply, until the next line shows whether it ends the reply
	out   []byte // filtered bytes not yet returned
	rerr  error  // the backend's read error, returned once out is empty

	mu      sync.Mutex
	cond    *sync.Cond
	sent    int  // commands forwarded (a message's "." counts as one)
	replied int  // final reply lines seen
	last    int  // code of the last final reply
	gone    bool // the backend side ended
}

// smtpReplyTimeout bounds the wait for the backend's answer to DATA and to a message's
// end: RFC 5321 §4.5.3.2.6 gives the server 10 minutes for the latter.
const smtpReplyTimeout = 10 * time.Minute

// smtpRefused replaces a command the gate does not let through after login.
const smtpRefused = "X-IMAPGATE-REFUSED\r\n"

func newSMTPRelay(c net.Conn, src *bufio.Reader, log *slog.Logger, maxLine int) *smtpRelay {
	r := &smtpRelay{Conn: c, src: src, log: log, maxLine: maxLine}
	r.cond = sync.NewCond(&r.mu)
	return r
}

// errSMTPLine ends a session whose command line outgrew the limit after login.
var errSMTPLine = errors.New("smtp: command line too long after login")

// Write filters the client's bytes into the backend; see smtpRelay.
func (r *smtpRelay) Write(p []byte) (int, error) {
	n := len(p)
	var out []byte
	flush := func() error {
		if len(out) == 0 {
			return nil
		}
		_, err := r.Conn.Write(out)
		out = out[:0]
		return err
	}
	for len(p) > 0 {
		if r.data {
			k, end := r.scanData(p)
			// A message passes as it came, without a copy.
			if err := flush(); err != nil {
				return 0, err
			}
			if _, err := r.Conn.Write(p[:k]); err != nil {
				return 0, err
			}
			p = p[k:]
			if end {
				r.data = false
				if err := r.await(1); err != nil {
					return 0, err
				}
			}
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(r.part)+len(p) > r.maxLine {
				return 0, errSMTPLine
			}
			r.part = append(r.part, p...)
			break
		}
		line := p[:i+1]
		if len(r.part) > 0 {
			if len(r.part)+len(line) > r.maxLine {
				return 0, errSMTPLine
			}
			line = append(r.part, line...)
			r.part = r.part[:0]
		}
		p = p[i+1:]
		switch verb := smtpVerb(line); verb {
		case "XCLIENT", "XFORWARD", "STARTTLS", "BDAT":
			r.log.Warn("command refused after login", "event", "smtp_filter", "result", "refused", "command", verb)
			out = append(out, smtpRefused...)
		case "DATA":
			out = append(out, line...)
			if err := flush(); err != nil {
				return 0, err
			}
			if err := r.await(1); err != nil {
				return 0, err
			}
			r.mu.Lock()
			r.data, r.bol, r.dot = r.last == 354, true, false
			r.mu.Unlock()
			continue
		default:
			out = append(out, line...)
		}
		r.count(1)
	}
	if err := flush(); err != nil {
		return 0, err
	}
	return n, nil
}

// count notes n commands forwarded.
func (r *smtpRelay) count(n int) {
	r.mu.Lock()
	r.sent += n
	r.mu.Unlock()
}

// await notes n more commands forwarded and waits until the backend has answered all
// commands so far.
func (r *smtpRelay) await(n int) error {
	t := time.AfterFunc(smtpReplyTimeout, func() {
		r.mu.Lock()
		r.gone = true
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer t.Stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent += n
	for r.replied < r.sent && !r.gone {
		r.cond.Wait()
	}
	if r.replied < r.sent {
		return fmt.Errorf("smtp: no answer from the backend (%d of %d commands answered)", r.replied, r.sent)
	}
	return nil
}

// scanData finds the end of a message in p: it returns how many bytes belong to the
// message (the final "." line included) and whether it ended.
func (r *smtpRelay) scanData(p []byte) (int, bool) {
	for i := 0; i < len(p); {
		if !r.bol && !r.dot {
			j := bytes.IndexByte(p[i:], '\n')
			if j < 0 {
				return len(p), false
			}
			i += j + 1
			r.bol = true
			continue
		}
		c := p[i]
		i++
		switch {
		case r.bol && c == '.':
			r.bol, r.dot = false, true
		case r.dot && c == '\r':
		case r.dot && c == '\n':
			r.dot = false
			return i, true
		case c == '\n':
			r.bol, r.dot = true, false
		default:
			r.bol, r.dot = false, false
		}
	}
	return len(p), false
}

// smtpVerb is a command line's verb in upper case ("" if it has none), read as
// liberally as a server could: leading blanks skipped (Postfix does), ended by any
// blank or control byte (a NUL ends a C string), at most 12 bytes (longer is no verb
// the filter looks for).
func smtpVerb(line []byte) string {
	i := 0
	for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
		i++
	}
	end := i
	for end < len(line) && end-i <= 12 && line[end] > ' ' && line[end] != 0x7f {
		end++
	}
	return string(bytes.ToUpper(line[i:end]))
}

// Read hands the splice the backend's replies, filtered; see smtpRelay.
func (r *smtpRelay) Read(p []byte) (int, error) {
	for len(r.out) == 0 {
		if r.rerr != nil {
			return 0, r.rerr
		}
		if r.rbuf == nil {
			r.rbuf = make([]byte, 4096) // replies are short; the splice's record-sized buffer is for data
		}
		k, err := r.src.Read(r.rbuf)
		if ferr := r.down(r.rbuf[:k]); ferr != nil && err == nil {
			err = ferr
		}
		if err != nil {
			r.rerr = err
			r.mu.Lock()
			r.gone = true
			r.cond.Broadcast()
			r.mu.Unlock()
		}
	}
	n := copy(p, r.out)
	r.out = r.out[n:]
	if len(r.out) == 0 {
		r.out = nil // the next chunk starts a fresh slice; nothing large is kept
	}
	return n, nil
}

// down filters a chunk of replies into r.out.
func (r *smtpRelay) down(chunk []byte) error {
	replies, last := 0, 0
	for len(chunk) > 0 {
		i := bytes.IndexByte(chunk, '\n')
		if i < 0 {
			if len(r.dpart)+len(chunk) > maxBackendLine {
				return errors.New("smtp: backend reply line too long")
			}
			r.dpart = append(r.dpart, chunk...)
			break
		}
		line := chunk[:i+1]
		chunk = chunk[i+1:]
		if len(r.dpart) > 0 {
			line = append(r.dpart, line...)
			r.dpart = nil
		}
		final := len(line) < 4 || line[3] != '-'
		hide := bytes.HasPrefix(line, []byte("250")) && len(line) > 4 && smtpHidden(line[4:])
		switch {
		case !final && hide:
			// dropped
		case !final:
			r.out = append(r.out, r.held...)
			r.held = append(r.held[:0:0], line...)
		case hide && r.held != nil:
			r.held[3] = ' ' // the held line ends the reply now
			r.out = append(r.out, r.held...)
			r.held = nil
		default:
			r.out = append(r.out, r.held...)
			r.held = nil
			r.out = append(r.out, line...)
		}
		if final {
			replies++
			last = 0
			if len(line) >= 3 {
				last = int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
			}
		}
	}
	if replies > 0 {
		r.mu.Lock()
		r.replied += replies
		r.last = last
		r.cond.Broadcast()
		r.mu.Unlock()
	}
	return nil
}

// smtpHidden reports whether an EHLO keyword line (after "250-") names an extension the
// client must not see after login.
func smtpHidden(kw []byte) bool {
	switch smtpVerb(kw) {
	case "CHUNKING", "BINARYMIME", "XCLIENT", "XFORWARD", "STARTTLS":
		return true
	}
	return false
}
