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
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Capabilities the front announces before login. The backend's own post-login list is
// relayed in the tagged OK of LOGIN/AUTHENTICATE.
const (
	capsTLS   = "IMAP4rev1 SASL-IR ID LITERAL+ AUTH=PLAIN"
	capsPlain = "IMAP4rev1 STARTTLS LOGINDISABLED ID LITERAL+"
)

// secret holds a password; it never prints.
type secret string

func (secret) String() string                 { return "[redacted]" }
func (secret) GoString() string               { return "[redacted]" }
func (secret) LogValue() slog.Value           { return slog.StringValue("[redacted]") }
func (s secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// session is one client connection.
type session struct {
	srv *Server
	st  *state
	log *slog.Logger

	id     string
	raw    net.Conn // the accepted TCP connection
	conn   net.Conn // raw, or the TLS connection on top of it
	br     *bufio.Reader
	wr     *wireReader
	remote netip.AddrPort
	local  netip.AddrPort

	peer    atomic.Pointer[peer]
	backend atomic.Pointer[net.Conn]
	user    string
	client  string // the client's ID name/version, for the log

	wmu    sync.Mutex // serialises writes to the client (loop, splice, kill)
	killed atomic.Bool
	ended  chan struct{} // closed by kill: waits in the pre-auth path give up
	bad    int
	expiry *time.Timer // ends the session when the certificate expires

	proxied *proxied // set by a successful login; run then splices
}

func newSession(srv *Server, st *state, c net.Conn) *session {
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
	}
	s.log = st.opts.Logger.With("session", s.id, "remote_ip", s.remote.Addr().Unmap().String(), "remote_port", s.remote.Port())
	s.br = bufio.NewReaderSize(c, 1024)
	s.wr = &wireReader{br: s.br, lim: defaultWireLimits, cont: s.sendContinuation}
	return s
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
		io.WriteString(s.conn, r.line("*"))
		s.wmu.Unlock()
		s.closeAll()
	}()
	return true
}

// lingerClose ends a connection the front is closing: it says it will send no more
// (TLS close_notify, then TCP FIN) and reads and discards what the client still sends
// for a moment, so that the kernel does not answer unread data with a reset that would
// destroy our last line (a BYE) before the client reads it.
func (s *session) lingerClose() {
	if b := s.backend.Load(); b != nil {
		(*b).Close()
	}
	if s.killed.Load() {
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

func (s *session) closeAll() {
	s.raw.Close()
	if b := s.backend.Load(); b != nil {
		(*b).Close()
	}
}

// run drives the connection: TLS (at once or after STARTTLS), greeting, pre-auth loop.
func (s *session) run(ctx context.Context, mode Mode) {
	if !s.srv.registry.add(s) {
		s.log.Debug("connection closed: the server is shutting down", "event", "accept", "result", "shutdown")
		s.raw.Close()
		return
	}
	defer func() {
		if s.expiry != nil {
			s.expiry.Stop()
		}
		s.srv.registry.remove(s)
		s.lingerClose()
	}()
	if mode == ImplicitTLS {
		if !s.handshake(ctx) {
			return
		}
		if s.write("* OK [CAPABILITY "+capsTLS+"] imapgate ready.\r\n") != nil {
			return
		}
	} else if s.write("* OK [CAPABILITY "+capsPlain+"] imapgate ready; STARTTLS with your smartcard certificate first.\r\n") != nil {
		return
	}
	s.loop(ctx)
	if p := s.proxied; p != nil {
		s.proxied = nil
		s.relay(p)
	}
}

// handshake runs TLS with a deadline and checks the client certificate. On a refused
// certificate the user gets "* BYE [ALERT] why" over the finished TLS connection.
func (s *session) handshake(ctx context.Context) bool {
	// A STARTTLS client may start its handshake long after it connected, with reloads
	// in between (and the CRL sources of then stopped): it gets the configuration of now.
	st := s.srv.st.Load()
	s.st = st
	if !s.srv.conns.handshakeAllowed(s.remote.Addr(), &st.opts.Limits, time.Now()) {
		s.srv.metrics.handshakes.WithLabelValues("limited").Inc()
		s.log.Warn("handshake refused", "event", "handshake", "result", "limited", "reason", "too many handshakes from this address")
		return false
	}
	tc := tls.Server(s.raw, st.tls)
	hctx, cancel := context.WithTimeout(ctx, st.opts.HandshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		result := "tls_error"
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
			result = "timeout"
		}
		s.srv.metrics.handshakes.WithLabelValues(result).Inc()
		s.log.Warn("handshake failed", "event", "handshake", "result", result, "reason", err.Error())
		return false
	}
	s.conn = tc
	s.br.Reset(tc)
	p, rej := st.verifyPeer(tc.ConnectionState(), time.Now())
	if rej != nil {
		s.srv.metrics.handshakes.WithLabelValues(rej.result).Inc()
		attrs := []any{"event", "handshake", "result", rej.result, "reason", rej.reply.Reason}
		if cs := tc.ConnectionState(); len(cs.PeerCertificates) > 0 {
			attrs = append(attrs, "serial", leafSerial(cs), "subject", cs.PeerCertificates[0].Subject.String())
		}
		s.log.Warn("certificate refused", attrs...)
		s.write(rej.reply.line("*"))
		return false
	}
	s.log = s.log.With("serial", p.serialHex(), "subject", p.subject())
	s.peer.Store(p) // publishes s.log to the registry too
	// A certificate that expires during a long session (IDLE for days) ends it then.
	s.expiry = time.AfterFunc(time.Until(p.leaf.NotAfter), func() {
		s.log.Info("session ended: certificate expired", "event", "expired", "result", "expired", "reason", "certificate expired during the session")
		s.kill(&Reply{Status: "BYE", Code: "ALERT", Text: "Your certificate has expired. Call the help desk to renew it."})
	})
	// Look again, in the configuration of now: between the check and the registration
	// above a CRL may have landed or gone stale, or a reload may have replaced the CRL
	// sources; the registry walks that these make see the session from here on.
	store := s.srv.st.Load().crlFor(p.issuer)
	if store == nil {
		s.srv.metrics.handshakes.WithLabelValues("crl_unavailable").Inc()
		s.log.Warn("certificate refused", "event", "handshake", "result", "crl_unavailable", "reason", "a reload removed the CRL source of the certificate's issuer")
		s.write("* BYE [UNAVAILABLE] Certificate status cannot be checked right now. Try again later or call the help desk.\r\n")
		return false
	}
	snap, err := store.Fresh(time.Now())
	if err != nil {
		s.srv.metrics.handshakes.WithLabelValues("crl_unavailable").Inc()
		s.log.Warn("certificate refused", "event", "handshake", "result", "crl_unavailable", "reason", err.Error())
		s.write("* BYE [UNAVAILABLE] Certificate status cannot be checked right now. Try again later or call the help desk.\r\n")
		return false
	}
	if snap.Revoked(p.serial) {
		s.srv.metrics.handshakes.WithLabelValues("revoked").Inc()
		s.log.Warn("certificate refused", "event", "handshake", "result", "revoked", "reason", "certificate revoked", "serial", p.serialHex(), "subject", p.subject())
		s.write("* BYE [ALERT] Your certificate has been revoked. Call the help desk for a new smartcard certificate.\r\n")
		return false
	}
	s.srv.metrics.handshakes.WithLabelValues("ok").Inc()
	s.log.Debug("handshake ok", "event", "handshake", "result", "ok", "resumed", p.resumed, "tls_version", tls.VersionName(tc.ConnectionState().Version))
	return true
}

func leafSerial(cs tls.ConnectionState) string {
	return serialHex(cs.PeerCertificates[0].SerialNumber)
}

// loop reads and answers pre-auth commands until LOGOUT, a splice, an error or BYE.
func (s *session) loop(ctx context.Context) {
	for {
		if s.killed.Load() {
			return
		}
		s.raw.SetReadDeadline(time.Now().Add(s.st.opts.PreAuthTimeout))
		cmd, err := s.wr.ReadCommand()
		if err != nil {
			s.readError(err)
			if s.endAfterBad(err) {
				return
			}
			continue
		}
		s.raw.SetReadDeadline(time.Time{})
		// The debug trace names the command only: arguments may be credentials, and
		// so may a tag or a command name if a client's framing went wrong (a password
		// sent where a command was expected), so neither is logged as sent.
		s.log.Debug("command", "event", "preauth", "command", traceName(cmd.name), "args", len(cmd.args))
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
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.write("* BYE Autologout: no command for too long.\r\n")
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
	s.write("* BYE Too many invalid commands.\r\n")
	return true
}

// dispatch runs one parsed command: first the arguments are checked, then whether the
// command is allowed now, then it is done.
func (s *session) dispatch(ctx context.Context, cmd *command) (done bool, err error) {
	tlsOn := s.peer.Load() != nil
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
		s.write("* BYE Logging out.\r\n" + cmd.tag + " OK LOGOUT completed.\r\n")
		return true, nil
	case "ID":
		return false, s.cmdID(cmd)
	case "STARTTLS":
		if len(cmd.args) != 0 {
			return false, replyBad("STARTTLS takes no arguments.")
		}
		if tlsOn || s.conn != s.raw {
			return false, replyBad("TLS is already active.")
		}
		if s.br.Buffered() > 0 {
			// Commands pipelined after STARTTLS would be injected into the TLS session.
			return false, &Reply{Status: "BYE", Text: "Data after STARTTLS before the TLS handshake; closing."}
		}
		if err := s.write(cmd.tag + " OK Begin TLS negotiation now.\r\n"); err != nil {
			return true, nil
		}
		if !s.handshake(ctx) {
			return true, nil
		}
		// Anything said in the clear may come from whoever sits on the path: the TLS
		// session starts over (RFC 3501 §6.2.1), with no client name and no BADs.
		s.client, s.bad = "", 0
		return false, nil
	case "LOGIN":
		if len(cmd.args) != 2 || !isAstring(cmd.args[0]) || !isAstring(cmd.args[1]) {
			return false, replyBad("Usage: LOGIN user password")
		}
		if !tlsOn {
			return false, &Reply{Status: "NO", Code: "PRIVACYREQUIRED", Text: "Use STARTTLS with your smartcard certificate first."}
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
		return false, &Reply{Status: "NO", Code: "CANNOT", Text: "Only AUTHENTICATE PLAIN is supported."}
	}
	if !tlsOn {
		return false, &Reply{Status: "NO", Code: "PRIVACYREQUIRED", Text: "Use STARTTLS with your smartcard certificate first."}
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
		s.raw.SetReadDeadline(time.Now().Add(s.st.opts.PreAuthTimeout))
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
