package mtls

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// session is one client connection, from accept to close: TLS (at once or after
// STARTTLS, handshake.go), the pre-auth loop (preauth.go), the login (login.go) and the
// splice (splice.go). kill ends it from outside (revocation, shutdown).
type session struct {
	srv *Server
	st  *state
	// log writes the session's lines with its attributes (sessionLog); it is the
	// same logger for the whole session, whose attributes grow with it.
	log *slog.Logger
	lh  sessionLog

	id     string
	raw    net.Conn   // the accepted TCP connection
	hw     heldWrites // raw as the TLS connection writes it (heldwrites.go)
	conn   net.Conn   // raw, or the TLS connection on top of it
	br     *bufio.Reader
	wr     *wireReader
	remote netip.AddrPort
	local  netip.AddrPort
	phase  phase // where the pre-auth loop is; only the session's goroutine uses it
	proto  protocol

	peer    atomic.Pointer[peer]
	backend atomic.Pointer[net.Conn]
	user    string
	client  string // the client's ID name/version, for the log

	wmu    sync.Mutex // serialises writes to the client (loop, splice, kill)
	killed atomic.Bool
	ended  chan struct{} // closed by kill: waits in the pre-auth path give up
	bad    int
	logins int           // LOGIN and AUTHENTICATE attempts so far
	failed []failedLogin // fingerprints of this connection's failed logins (login.go)
	plain  int           // commands read before STARTTLS (limits.max_plain_commands)
	expiry *time.Timer   // ends the session when the certificate expires

	start   time.Time // accept: timeouts.preauth_total counts from here, STARTTLS or not
	preauth bool      // holds a place in the pre-auth share (limits.preauth_share)

	proxied *proxied // set by a successful login; run then splices
}

func newSession(srv *Server, st *state, c net.Conn, proto protocol) *session {
	var idb [9]byte
	rand.Read(idb[:])
	s := &session{
		srv:    srv,
		st:     st,
		id:     base64.RawURLEncoding.EncodeToString(idb[:]),
		raw:    c,
		conn:   c,
		remote: addrPort(c.RemoteAddr()),
		local:  addrPort(c.LocalAddr()),
		ended:  make(chan struct{}),
		start:  time.Now(),
		proto:  proto,
	}
	s.lh = sessionLog{s: s, next: st.opts.Logger.Handler()}
	s.log = slog.New(&s.lh)
	s.br = bufio.NewReaderSize(c, 1024)
	s.wr = &wireReader{br: s.br, lim: defaultWireLimits, cont: s.sendContinuation}
	return s
}

// sessionLog is the handler of a session's logger: it puts the session's attributes
// (session, remote_ip, remote_port, protocol but for IMAP, then serial and subject once
// the certificate is accepted) in front of each line's own, as Logger.With would, but
// only into the lines actually written. With on the JSON handler formatted them for
// every connection, twice, whether or not the connection wrote a line — and at level
// info most write none (1.3–2 % of a handshake's CPU). The attributes are read from
// the session when a line is written: its id, addresses and protocol never change,
// and its peer is published atomically.
type sessionLog struct {
	s    *session
	next slog.Handler
}

func (h *sessionLog) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *sessionLog) Handle(ctx context.Context, r slog.Record) error {
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	nr.AddAttrs(h.s.logAttrs()...)
	r.Attrs(func(a slog.Attr) bool { nr.AddAttrs(a); return true })
	return h.next.Handle(ctx, nr)
}

// WithAttrs and WithGroup fix the session's attributes of now into the derived
// logger (the login's, which adds the user): by then they no longer change.
func (h *sessionLog) WithAttrs(as []slog.Attr) slog.Handler {
	return h.next.WithAttrs(append(h.s.logAttrs(), as...))
}

func (h *sessionLog) WithGroup(name string) slog.Handler {
	return h.next.WithAttrs(h.s.logAttrs()).WithGroup(name)
}

// logAttrs are the attributes every line of the session carries.
func (s *session) logAttrs() []slog.Attr {
	as := make([]slog.Attr, 0, 6)
	as = append(as, slog.String("session", s.id), slog.String("remote_ip", s.remote.Addr().Unmap().String()),
		slog.Uint64("remote_port", uint64(s.remote.Port())))
	if n := s.proto.name(); n != "imap" {
		as = append(as, slog.String("protocol", n)) // IMAP's lines stay as they were
	}
	if p := s.peer.Load(); p != nil {
		as = append(as, slog.String("serial", p.serialHex()), slog.String("subject", p.subject()))
	}
	return as
}

// run drives the connection: TLS (at once or after STARTTLS), greeting, pre-auth loop,
// then the splice of a logged-in session.
func (s *session) run(ctx context.Context, mode Mode) {
	if !s.srv.track(s) {
		s.log.Debug("connection closed: the server is shutting down", "event", "accept", "result", "shutdown")
		s.raw.Close()
		return
	}
	defer func() {
		if s.expiry != nil {
			s.expiry.Stop()
		}
		s.srv.untrack(s)
		s.lingerClose()
	}()
	if mode == ImplicitTLS {
		if !s.handshake(ctx) {
			return
		}
		if s.proto.greet(s, true) != nil {
			return
		}
	} else if s.proto.greet(s, false) != nil {
		return
	}
	s.proto.preauth(ctx, s)
	if p := s.proxied; p != nil {
		s.proxied = nil
		s.leavePreAuth()
		s.relay(p)
	}
}

// leavePreAuth gives back the session's place in the pre-auth share, once: at login,
// or at the end of a session that never logged in.
func (s *session) leavePreAuth() {
	if s.preauth {
		s.preauth = false
		s.srv.conns.leavePreAuth()
	}
}

// preAuthDeadline is when the wait for the next pre-auth read ends: timeouts.preauth
// from now, but never past timeouts.preauth_total from the accept — a client that
// sends a NOOP now and then cannot stay unauthenticated for ever.
func (s *session) preAuthDeadline() time.Time {
	d, total := time.Now().Add(s.st.opts.PreAuthTimeout), s.start.Add(s.st.opts.PreAuthTotal)
	if total.Before(d) {
		return total
	}
	return d
}

func (s *session) sendContinuation() error { return s.write("+ Ready for literal data\r\n") }

// write sends one or more lines to the client under the write lock, with a deadline so
// a client that does not read cannot hold the session forever.
func (s *session) write(line string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.raw.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := io.WriteString(s.conn, line)
	s.raw.SetWriteDeadline(time.Time{})
	return err
}

// kill ends the session from outside (revocation, shutdown): BYE, then close both sides.
// It never blocks its caller, and reports whether this call ended the session.
func (s *session) kill(r *Reply) bool { return s.killNoted(r, nil) }

// killNoted is kill with note run once, only by the call that ends the
// session, before the reply is written: the log line and the metric of why
// it ended come before the client can see the BYE, and never twice.
func (s *session) killNoted(r *Reply, note func()) bool {
	if !s.killed.CompareAndSwap(false, true) {
		return false
	}
	if note != nil {
		note()
	}
	close(s.ended)
	if s.peer.Load() == nil {
		// Before (or during) the handshake there is nobody to tell: just close.
		s.closeAll()
		return true
	}
	go func() {
		// A writer stuck on a client that does not read gives up after this deadline;
		// then our BYE gets the same bound.
		s.raw.SetWriteDeadline(time.Now().Add(3 * time.Second))
		s.wmu.Lock()
		s.raw.SetWriteDeadline(time.Now().Add(3 * time.Second))
		io.WriteString(s.conn, s.say(r, "*"))
		s.closeNotifyLocked()
		s.wmu.Unlock()
		s.closeAll()
	}()
	return true
}

// lingerClose ends a connection the front is closing: it says it will send no more
// (TLS close_notify, then TCP FIN) and reads and discards what the client still sends
// for a moment, so that the kernel does not answer unread data with a reset that would
// destroy our last line (a BYE) before the client reads it. A client that has already
// left (clientLeft) gets none of it: there is no last line of ours to protect and
// nobody to read a close_notify, whose encryption and write were 6–8 % of the CPU of a
// connection that only greets (docs/performance.md).
func (s *session) lingerClose() {
	if b := s.backend.Load(); b != nil {
		(*b).Close()
	}
	if s.killed.Load() || s.clientLeft() {
		s.raw.Close()
		return
	}
	type closeWriter interface{ CloseWrite() error }
	s.raw.SetWriteDeadline(time.Now().Add(time.Second))
	if cw, ok := s.conn.(closeWriter); ok {
		cw.CloseWrite()
	}
	if tc, ok := s.raw.(closeWriter); ok && s.conn != s.raw {
		tc.CloseWrite()
	}
	s.raw.SetReadDeadline(time.Now().Add(time.Second))
	io.CopyN(io.Discard, s.raw, 256<<10)
	s.raw.Close()
}

// clientLeft reports whether reading from the client over TLS has already ended: its
// close_notify or its TCP FIN (both io.EOF), a reset, an alert. crypto/tls keeps such an
// error and returns it again from every Read without touching the socket; otherwise,
// with the read deadline already past, the Read fails at once on the deadline, before
// any system call. So the question costs no system call, and a client that is still
// there (or has sent more, which the Read then takes) keeps its lingering close: so does
// every session the front ends itself (a BYE, LOGOUT's answer included). What lands here
// is a client that closed while the pre-auth loop waited for its next command — the
// common end of a connection that only checks the server (greeting, then close) — and
// the end of a splice, where the client's side is closed already. Without TLS there is
// nothing to ask.
func (s *session) clientLeft() bool {
	tc, ok := s.conn.(*tls.Conn)
	if !ok {
		return false
	}
	s.raw.SetReadDeadline(time.Unix(1, 0))
	var b [1]byte
	_, err := tc.Read(b[:])
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// endTLS ends a session the front or the backend ends after the handshake (the
// splice's end): TLS close_notify first, so that the client reads a clean end of
// stream and not a cut connection, then both sides close. The write deadline first
// frees a writer stuck on a client that does not read.
func (s *session) endTLS() {
	s.raw.SetWriteDeadline(time.Now().Add(2 * time.Second))
	s.wmu.Lock()
	s.closeNotifyLocked()
	s.wmu.Unlock()
	s.closeAll()
}

// closeNotifyLocked sends TLS close_notify, once; the caller holds wmu and has set a
// write deadline. Without TLS (or before its handshake) there is nothing to send.
func (s *session) closeNotifyLocked() {
	if tc, ok := s.conn.(*tls.Conn); ok {
		tc.CloseWrite()
	}
}

func (s *session) closeAll() {
	s.raw.Close()
	if b := s.backend.Load(); b != nil {
		(*b).Close()
	}
}
