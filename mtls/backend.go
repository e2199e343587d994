package mtls

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

// dovecotMaxPenalty is the longest auth penalty Dovecot puts on an address after
// failed logins (AUTH_PENALTY_MAX_SECS), before its auth_failure_delay (2 s by
// default). It applies to the front's own address unless the front is in
// login_trusted_networks; then to the client address the front forwards in ID.
const dovecotMaxPenalty = 15 * time.Second

// minLoginTimeout is the shortest backend.login_timeout that outlasts that penalty,
// the failure delay and a slow password database; shorter ones are warned about.
const minLoginTimeout = dovecotMaxPenalty + 5*time.Second

// maxBackendLine bounds one line from the backend before login (a CAPABILITY list).
const maxBackendLine = 64 << 10

// backendLogin dials the IMAP server, sends ID with the client's address and the session
// id (Dovecot honours these from login_trusted_networks), then LOGIN. It returns the
// connection, its reader (which may hold bytes already) and the post-login capabilities.
func (s *session) backendLogin(ctx context.Context, user string, pass secret) (net.Conn, *bufio.Reader, string, error) {
	bo := s.st.opts.Backend
	raw, c, br, end, err := s.openBackend(ctx, &bo, func(ctx context.Context, raw net.Conn) (net.Conn, *bufio.Reader, error) {
		return backendGreeting(ctx, raw, &bo)
	})
	if err != nil {
		return nil, nil, "", err
	}
	defer end()
	fail := func(err error) (net.Conn, *bufio.Reader, string, error) {
		raw.Close()
		return nil, nil, "", err
	}
	w := bufio.NewWriterSize(c, 1024)
	local := s.local
	fmt.Fprintf(w, "g1 ID (\"x-originating-ip\" \"%s\" \"x-originating-port\" \"%d\" \"x-connected-ip\" \"%s\" \"x-connected-port\" \"%d\" \"x-session-id\" \"%s\")\r\n",
		s.remote.Addr().Unmap(), s.remote.Port(), local.Addr().Unmap(), local.Port(), s.id)
	if err := w.Flush(); err != nil {
		return fail(fmt.Errorf("backend: send ID: %w", err))
	}
	if r, err := readTagged(br, "g1"); err != nil {
		return fail(fmt.Errorf("backend: ID: %w", err))
	} else if r.status != "OK" {
		s.log.Warn("backend refused ID; client address not forwarded", "backend_reply", r.text)
	}

	// From here LOGIN is on its way: whatever the backend answers other than OK is a
	// refusal of this login (errLoginRefused, counted by the throttle); only a lost
	// connection or a timeout is the backend's trouble.
	w.WriteString("g2 LOGIN ")
	if err := sendAstring(w, br, user); err != nil {
		return fail(loginAnswer("LOGIN", err))
	}
	w.WriteString(" ")
	if err := sendAstring(w, br, string(pass)); err != nil {
		return fail(loginAnswer("LOGIN", err))
	}
	w.WriteString("\r\n")
	if err := w.Flush(); err != nil {
		return fail(fmt.Errorf("backend: send LOGIN: %w", err))
	}
	r, err := readTagged(br, "g2")
	if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
		return fail(fmt.Errorf("backend: no answer to LOGIN within backend.login_timeout (%s): %w; the backend may still log the user in. "+
			"Dovecot delays logins from an address after failures (its auth penalty, up to %s plus auth_failure_delay): add the front's address to Dovecot's login_trusted_networks, or raise backend.login_timeout", bo.LoginTimeout, err, dovecotMaxPenalty))
	}
	if err != nil {
		return fail(loginAnswer("LOGIN", err))
	}
	switch r.status {
	case "OK":
	case "NO":
		switch code := respCode(r.text); {
		case backendAtFault(code, r.text):
			return fail(&errBackendConfig{answer: "NO " + r.text})
		case code == "", code == "AUTHENTICATIONFAILED", code == "AUTHORIZATIONFAILED", code == "EXPIRED":
			return fail(errAuthFailed("backend refused the login: " + r.text))
		default:
			return fail(&errLoginRefused{answer: "NO " + r.text})
		}
	default:
		return fail(&errLoginRefused{answer: r.status + " " + r.text})
	}
	caps := r.caps
	if caps == "" {
		// The server did not put CAPABILITY in its OK: ask, so the client gets the
		// post-login list in ours.
		w.WriteString("g3 CAPABILITY\r\n")
		if err := w.Flush(); err != nil {
			return fail(fmt.Errorf("backend: CAPABILITY: %w", err))
		}
		r3, err := readTagged(br, "g3")
		if err != nil || r3.status != "OK" || r3.caps == "" {
			return fail(fmt.Errorf("backend: CAPABILITY after login failed: %v", err))
		}
		caps = r3.caps
	}
	c.SetDeadline(time.Time{})
	return c, br, caps, nil
}

// backendGreeting reads the backend's greeting and brings up TLS as configured: at once
// (implicit), or after the greeting with STARTTLS. It returns the connection to speak
// IMAP on (raw or TLS on top of it) and its reader. Errors say what to check.
func backendGreeting(ctx context.Context, raw net.Conn, bo *BackendOptions) (net.Conn, *bufio.Reader, error) {
	c := raw
	if bo.TLS == BackendImplicitTLS {
		tc, err := backendHandshake(ctx, raw, bo)
		if err != nil {
			return nil, nil, err
		}
		c = tc
	}
	br := bufio.NewReaderSize(c, 4096)
	greet, err := readLine(br, maxBackendLine)
	if err != nil {
		return nil, nil, fmt.Errorf("backend: greeting from %s: %w", bo.Address, err)
	}
	if !strings.HasPrefix(greet, "* OK") {
		return nil, nil, fmt.Errorf("backend: unexpected greeting from %s: %.100q", bo.Address, greet)
	}
	if bo.TLS == BackendPlain && hasCap(greet, "LOGINDISABLED") {
		// Dovecot takes plaintext logins from clients it counts as secured: those on
		// login_trusted_networks (and loopback). LOGINDISABLED on a plain connection
		// says the front is not one of them; LOGIN would be refused.
		return nil, nil, fmt.Errorf("backend: %s refuses plaintext logins from the front (LOGINDISABLED in its greeting): add the front's address to Dovecot's login_trusted_networks, or set backend.tls to starttls or implicit", bo.Address)
	}
	if bo.TLS != BackendStartTLS {
		return c, br, nil
	}
	if _, err := io.WriteString(c, "g0 STARTTLS\r\n"); err != nil {
		return nil, nil, fmt.Errorf("backend: send STARTTLS: %w", err)
	}
	r, err := readTagged(br, "g0")
	if err != nil {
		return nil, nil, fmt.Errorf("backend: STARTTLS at %s: %w", bo.Address, err)
	}
	if r.status != "OK" {
		return nil, nil, fmt.Errorf("backend: %s refused STARTTLS (%s %.100s): enable TLS in the IMAP server, or set backend.tls to implicit for an imaps port", bo.Address, r.status, r.text)
	}
	if br.Buffered() > 0 {
		// Bytes after the OK but before the handshake were sent in the clear and could
		// be injected by anyone on the path (CVE-2011-0411 style): refuse them.
		return nil, nil, fmt.Errorf("backend: %s sent data after its STARTTLS OK, before the TLS handshake; refusing the connection", bo.Address)
	}
	tc, err := backendHandshake(ctx, raw, bo)
	if err != nil {
		return nil, nil, err
	}
	return tc, bufio.NewReaderSize(tc, 4096), nil
}

// backendHandshake runs the TLS handshake with the backend and verifies its certificate.
func backendHandshake(ctx context.Context, raw net.Conn, bo *BackendOptions) (*tls.Conn, error) {
	tc := tls.Client(raw, bo.TLSConfig)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("backend: TLS handshake with %s (server name %q): %w (check backend.tls, backend.ca_file and backend.server_name)", bo.Address, bo.TLSConfig.ServerName, err)
	}
	return tc, nil
}

// sendAstring writes s as a quoted string, or as a synchronising literal (waiting for
// the server's "+") when it cannot be quoted.
// sendAuthPlain sends POP3's and SMTP's AUTH PLAIN (RFC 4616) with its initial
// response, no authzid: the gate logs in as the certificate's user only.
func sendAuthPlain(w io.Writer, user string, pass secret) error {
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + string(pass)))
	if _, err := io.WriteString(w, "AUTH PLAIN "+ir+"\r\n"); err != nil {
		return fmt.Errorf("backend: send AUTH: %w", err)
	}
	return nil
}

func sendAstring(w *bufio.Writer, br *bufio.Reader, s string) error {
	if q, ok := quote(s); ok {
		_, err := w.WriteString(q)
		return err
	}
	fmt.Fprintf(w, "{%d}\r\n", len(s))
	if err := w.Flush(); err != nil {
		return err
	}
	line, err := readLine(br, maxBackendLine)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+") {
		return &errBackendAnswer{answer: fmt.Sprintf("%.100s (instead of the literal's continuation)", line)}
	}
	_, err = w.WriteString(s)
	return err
}

// errBackendAnswer is an unwanted answer of the backend: a BYE, or a line other than
// the continuation of a literal.
type errBackendAnswer struct{ answer string }

func (e *errBackendAnswer) Error() string { return "server said " + e.answer }

// errLoginRefused is an answer of the backend to a LOGIN other than OK and other than
// a refusal of the credentials: a BYE, a NO with another code, a BAD.
type errLoginRefused struct{ answer string }

func (e *errLoginRefused) Error() string { return "backend: answered " + e.answer + " to LOGIN" }

// errBackendConfig is a refusal of a sent login in which the backend blames itself or
// the way the front reaches it (a TLS or certificate requirement on the front's own
// connection, plaintext logins disabled, its auth service down). The password was not
// the question, so it is not counted against the card: a misconfigured backend must not
// lock every card out for throttle.lockout_for.
type errBackendConfig struct{ answer string }

func (e *errBackendConfig) Error() string {
	return "backend: answered " + e.answer + " to the login; it refuses the front itself: check the backend's TLS, client-certificate and login_trusted_networks settings for the front's address"
}

// backendAtFault reports whether a refusal (its response code and text, IMAP's or
// POP3's) blames the backend: the codes that say so (RFC 5530 UNAVAILABLE,
// PRIVACYREQUIRED, SERVERBUG; RFC 3206 SYS/TEMP), or an uncoded, ALERT or AUTH refusal
// whose text is about the transport, as Dovecot's "Client didn't present valid SSL
// certificate" and "Plaintext authentication disallowed on non-secure connections" are.
func backendAtFault(code, text string) bool {
	switch code {
	case "UNAVAILABLE", "PRIVACYREQUIRED", "SERVERBUG", "SYS/TEMP":
		return true
	case "", "ALERT", "AUTH":
		return mentionsTransport(text)
	}
	return false
}

// mentionsTransport reports whether a refusal's text is about TLS or certificates
// rather than the credentials.
func mentionsTransport(text string) bool {
	t := strings.ToLower(text)
	for _, w := range []string{"ssl", "tls", "certificate", "plaintext authentication disallowed"} {
		if strings.Contains(t, w) {
			return true
		}
	}
	return false
}

// loginAnswer wraps an error met while sending LOGIN or reading its answer: an answer
// of the backend becomes an errLoginRefused, anything else (I/O) is the backend's
// trouble.
func loginAnswer(cmd string, err error) error {
	var a *errBackendAnswer
	if errors.As(err, &a) {
		return &errLoginRefused{answer: a.answer}
	}
	return fmt.Errorf("backend: %s: %w", cmd, err)
}

type tagged struct {
	status string
	text   string
	caps   string // from [CAPABILITY …] in the tagged line or an untagged CAPABILITY
}

// readTagged reads lines until the one tagged tag; it remembers untagged CAPABILITY.
func readTagged(br *bufio.Reader, tag string) (tagged, error) {
	var r tagged
	for {
		line, err := readLine(br, maxBackendLine)
		if err != nil {
			return r, err
		}
		if rest, ok := strings.CutPrefix(line, "* "); ok {
			if c, ok := cutFold(rest, "CAPABILITY "); ok {
				r.caps = printable(c)
			}
			if strings.HasPrefix(strings.ToUpper(rest), "BYE") {
				return r, &errBackendAnswer{answer: fmt.Sprintf("%.200s", line)}
			}
			continue
		}
		rest, ok := strings.CutPrefix(line, tag+" ")
		if !ok {
			continue // a continuation or noise: not ours
		}
		status, text, _ := strings.Cut(rest, " ")
		r.status = strings.ToUpper(status)
		r.text = text
		if c, ok := cutFold(text, "[CAPABILITY "); ok {
			if end := strings.IndexByte(c, ']'); end >= 0 {
				r.caps = printable(c[:end])
			}
		}
		return r, nil
	}
}

// printable is s when it holds printable ASCII only, else "": the capabilities are
// relayed to the client, and a backend must not slip a control character (a bare CR)
// into the client's stream.
func printable(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return ""
		}
	}
	return s
}

// respCode is the response code of a status text ("[UNAVAILABLE] …" → "UNAVAILABLE").
func respCode(text string) string {
	if !strings.HasPrefix(text, "[") {
		return ""
	}
	end := strings.IndexAny(text, " ]")
	if end < 0 {
		return ""
	}
	return strings.ToUpper(text[1:end])
}

func cutFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return "", false
}

// hasCap reports whether the [CAPABILITY …] of a greeting lists name.
func hasCap(greet, name string) bool {
	i := strings.Index(strings.ToUpper(greet), "[CAPABILITY ")
	if i < 0 {
		return false
	}
	list, _, _ := strings.Cut(greet[i+len("[CAPABILITY "):], "]")
	for _, c := range strings.Fields(list) {
		if strings.EqualFold(c, name) {
			return true
		}
	}
	return false
}

// openBackend starts any protocol's backend login: it dials bo, runs greet (the
// greeting, and TLS as configured) within bo.DialTimeout, then gives the login
// bo.LoginTimeout. It returns the TCP connection (close it on a failure), the one to
// speak on (raw or TLS on top) and its reader; end must be called once the login is
// decided (it stops the cancel watch and records the login's duration). Both phases
// are in the metrics.
func (s *session) openBackend(ctx context.Context, bo *BackendOptions, greet func(context.Context, net.Conn) (net.Conn, *bufio.Reader, error)) (raw, c net.Conn, br *bufio.Reader, end func(), err error) {
	m := s.srv.metrics
	t0 := time.Now()
	raw, err = s.dialBackend(ctx, bo)
	if err != nil {
		m.backendDial.Observe(time.Since(t0).Seconds())
		return nil, nil, nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Now()) })
	raw.SetDeadline(time.Now().Add(bo.DialTimeout))
	c, br, err = greet(ctx, raw)
	m.backendDial.Observe(time.Since(t0).Seconds())
	if err != nil {
		stop()
		raw.Close()
		return nil, nil, nil, nil, err
	}
	t1 := time.Now()
	c.SetDeadline(time.Now().Add(bo.LoginTimeout))
	return raw, c, br, func() { stop(); m.backendLogin.Observe(time.Since(t1).Seconds()) }, nil
}

// dialBackend connects to bo's address for any protocol's backend login. The session
// holds the TCP connection, even when TLS runs on top, so that kill and shutdown can
// cut it at once.
func (s *session) dialBackend(ctx context.Context, bo *BackendOptions) (net.Conn, error) {
	d := net.Dialer{Timeout: bo.DialTimeout}
	dctx, cancel := context.WithTimeout(ctx, bo.DialTimeout)
	raw, err := d.DialContext(dctx, "tcp", bo.Address)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("backend: dial %s: %w", bo.Address, err)
	}
	s.backend.Store(&raw)
	if s.killed.Load() {
		raw.Close()
		return nil, errors.New("backend: session ended during login")
	}
	return raw, nil
}
