package mtls

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"
)

// maxPassword is the longest password the front takes (bytes); a longer one is BAD and
// counts as a failed login.
const maxPassword = 1024

// secret holds a password; it never prints.
type secret string

func (secret) String() string                 { return "[redacted]" }
func (secret) GoString() string               { return "[redacted]" }
func (secret) LogValue() slog.Value           { return slog.StringValue("[redacted]") }
func (s secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// login binds the identity, logs in to the backend and, on OK, relays the backend's OK
// and splices. It returns done=true once the session has been proxied (and ended).
func (s *session) login(ctx context.Context, tag, authzid, user string, pass secret, method string) (bool, error) {
	st := s.st
	p := s.peer.Load()
	s.user = user
	log := s.log.With("user", user, "method", method)
	if s.client != "" {
		log = log.With("client", s.client)
	}
	if s.logins >= st.opts.MaxLoginsPerConnection {
		s.srv.metrics.logins.WithLabelValues("too_many").Inc()
		log.Warn("connection closed: too many logins", "event", "login", "result", "too_many", "reason", fmt.Sprintf("%d login attempts on this connection (limits.max_logins_per_connection)", s.logins))
		return false, byeTooManyLogins
	}
	s.logins++
	// One mistake, one failure: Thunderbird retries a failed AUTHENTICATE PLAIN at once
	// with LOGIN and the same password. The same failed credentials on this connection
	// are answered at once as before, and count once.
	fp := loginFingerprint(authzid, user, pass)
	if r := s.repeatedFailure(fp); r != nil {
		s.srv.metrics.logins.WithLabelValues("repeated").Inc()
		log.Info("login failed: the same credentials already failed on this connection", "event", "login", "result", "repeated", "reason", r.Reason)
		return false, r
	}
	a, err := s.reserveLogin(ctx, log)
	if a == nil {
		if s.killed.Load() {
			return true, nil
		}
		return false, err
	}
	defer func() { a.release(&st.opts.Throttle, time.Now()) }() // unless decided below (backend unavailable)
	if len(pass) > maxPassword {
		// Dovecot answers BYE to these ("Input buffer full"): it must not be a way to
		// ask the backend for free.
		return false, s.remember(fp, s.failLogin(ctx, log, a, "password_too_long", fmt.Sprintf("password of %d bytes", len(pass)), badPasswordTooLong.withReason("password too long")))
	}
	login, why := st.opts.Identity.Bind(p.leaf, authzid, user)
	if why != "" {
		return false, s.remember(fp, s.failLogin(ctx, log, a, "identity_mismatch", why, errAuthFailed(why)))
	}
	if login != user {
		log = log.With("backend_user", login)
	}
	b, bbr, caps, err := s.proto.backendLogin(ctx, s, login, pass)
	if err != nil {
		var r *Reply
		var refused *errLoginRefused
		switch {
		case errors.As(err, &r) && r.Code == "AUTHENTICATIONFAILED":
			return false, s.remember(fp, s.failLogin(ctx, log, a, "bad_password", r.Reason, r))
		case errors.As(err, &refused):
			// Any other answer to a LOGIN that was sent is counted and delayed too:
			// which input makes a backend answer what must not matter.
			return false, s.failLogin(ctx, log, a, "backend_refused", err.Error(), errUnavailable(textBackendDown, err.Error()))
		}
		s.srv.metrics.logins.WithLabelValues("backend_error").Inc()
		log.Error("login failed: backend unavailable", "event", "login", "result", "backend_error", "reason", err.Error(), "backend", s.proto.backendAddress(&st.opts))
		if s.killed.Load() {
			return true, nil
		}
		return false, errUnavailable(textBackendDown, err.Error())
	}
	a.succeeded(&st.opts.Throttle, time.Now())
	s.srv.metrics.logins.WithLabelValues("ok").Inc()
	log.Info("login ok", "event", "login", "result", "ok")
	// The place in the pre-auth share goes back before the client reads its OK: a
	// client that opens its next connection at once must find it free.
	s.leavePreAuth()
	if err := s.write(s.proto.loggedIn(tag, caps)); err != nil {
		b.Close()
		return true, nil
	}
	// The splice runs from run(), once the pre-auth frames (loop, dispatch, login) have
	// returned: an idle session then sits on a shallow stack that the runtime shrinks,
	// which is a good part of its memory.
	s.proxied = &proxied{backend: b, br: bbr, log: log}
	s.phase = phaseLoggedIn
	return true, nil
}

// reserveLogin takes this login's place in the throttle before the password is checked
// anywhere. While other logins of the same certificate hold what is left of its
// lockout budget it waits for them to be decided (a mail program opening several
// connections at once just waits a moment); a lockout, or a wait that lasts the
// pre-auth timeout, refuses the login. A nil attempt comes with the reply to give.
func (s *session) reserveLogin(ctx context.Context, log *slog.Logger) (*attempt, error) {
	cfg := &s.st.opts.Throttle
	serial, ip := s.peer.Load().serialHex(), s.remote.Addr().Unmap()
	var timeout <-chan time.Time
	for {
		a, w, wait, why := s.srv.throttle.reserve(serial, ip, cfg, time.Now())
		if w != nil {
			if timeout == nil {
				t := time.NewTimer(s.st.opts.PreAuthTimeout)
				defer t.Stop()
				timeout = t.C
			}
			select {
			case <-w.ready:
				a, wait, why = s.srv.throttle.admit(w, cfg, time.Now())
			case <-timeout:
				s.srv.throttle.abandon(w, cfg, time.Now())
				why := "other logins of this certificate were still being checked"
				s.srv.metrics.logins.WithLabelValues("busy").Inc()
				log.Warn("login refused", "event", "login", "result", "busy", "reason", why)
				return nil, errUnavailable(textLoginBusy, why)
			case <-ctx.Done():
				s.srv.throttle.abandon(w, cfg, time.Now())
				return nil, errUnavailable(textShuttingDown, "server shutting down")
			case <-s.ended:
				s.srv.throttle.abandon(w, cfg, time.Now())
				return nil, nil
			}
		}
		switch {
		case a != nil:
			return a, nil
		case why != "":
			s.srv.metrics.logins.WithLabelValues("locked").Inc()
			log.Warn("login refused", "event", "login", "result", "locked", "reason", why)
			return nil, errUnavailable(textLockedOut(roundUp(wait)), why)
		}
		// Sent back to ask again: the certificate was locked out while this login waited.
	}
}

// failLogin throttles (a growing delay), counts and logs a failed login, then returns
// reply: for a wrong password, a login name the certificate does not allow or an
// authzid, the same NO whatever the reason.
func (s *session) failLogin(ctx context.Context, log *slog.Logger, a *attempt, result, why string, reply *Reply) error {
	delay := a.failed(&s.st.opts.Throttle, time.Now())
	s.srv.metrics.logins.WithLabelValues(result).Inc()
	log.Warn("login failed", "event", "login", "result", result, "reason", why, "delay", delay.String())
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		case <-s.ended:
			t.Stop()
		}
	}
	return reply
}

// loginMACKey keys the fingerprints of failed logins: random for each process, it
// makes a fingerprint useless outside it. Passwords themselves are never kept.
var loginMACKey = func() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}()

// loginFingerprint is a keyed hash (HMAC-SHA256) of what a login tried. An authzid
// equal to the login is the same as none (Bind treats them alike).
func loginFingerprint(authzid, user string, pass secret) [32]byte {
	if authzid == user {
		authzid = ""
	}
	m := hmac.New(sha256.New, loginMACKey)
	for _, part := range []string{authzid, user, string(pass)} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		m.Write(n[:])
		m.Write([]byte(part))
	}
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// failedLogin is a failure of this connection: its fingerprint and its answer.
type failedLogin struct {
	mac   [32]byte
	reply *Reply
}

// remember keeps the fingerprint of a failed login with its answer, and returns it.
func (s *session) remember(fp [32]byte, reply error) error {
	if r, ok := reply.(*Reply); ok {
		s.failed = append(s.failed, failedLogin{mac: fp, reply: r})
	}
	return reply
}

// repeatedFailure is the answer of an earlier failure with fingerprint fp, or nil.
// Every remembered fingerprint is compared in constant time.
func (s *session) repeatedFailure(fp [32]byte) *Reply {
	var found *Reply
	for _, f := range s.failed {
		if hmac.Equal(f.mac[:], fp[:]) && found == nil {
			found = f.reply
		}
	}
	return found
}

func roundUp(d time.Duration) string {
	if d < time.Minute {
		return strconv.Itoa(int(d/time.Second)+1) + " seconds"
	}
	return strconv.Itoa(int(d/time.Minute)+1) + " minutes"
}
