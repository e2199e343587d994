package mtls

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

// SMTPOptions are the SMTP submission gate's own settings; everything else (TLS,
// CRLs, identity, throttle, limits, timeouts) is shared with IMAP.
type SMTPOptions struct {
	// Backend is the submission server behind the gate (Postfix's submission
	// service with Dovecot SASL, port 587, or 465 with TLS implicit). Its address is
	// required for Server.ServeSMTP.
	Backend BackendOptions
	// Hostname is the name in the gate's greeting and EHLO reply; default the
	// machine's host name.
	Hostname string
	// MaxMessageSize is the SIZE the gate announces before login (RFC 1870); the
	// backend enforces its own (Postfix message_size_limit). Default 10240000,
	// Postfix's default.
	MaxMessageSize int64
}

// DefaultSMTPMaxMessageSize is smtp.max_message_size's default, Postfix's
// message_size_limit default.
const DefaultSMTPMaxMessageSize = 10240000

func (o *SMTPOptions) setDefaults() {
	setDefault(&o.Backend.DialTimeout, 5*time.Second)
	setDefault(&o.Backend.LoginTimeout, 30*time.Second)
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = DefaultSMTPMaxMessageSize
	}
	if o.Hostname == "" {
		o.Hostname, _ = os.Hostname()
		if o.Hostname == "" {
			o.Hostname = "localhost"
		}
	}
}

func (smtp) backendAddress(o *Options) string { return o.SMTP.Backend.Address }

// smtpMaxReplyLines bounds the lines of one backend reply before login (an EHLO list).
const smtpMaxReplyLines = 100

// backendLogin dials the submission server, says EHLO (with the client's EHLO name),
// brings up TLS as configured, forwards the client's address with XCLIENT (Postfix's
// smtpd_authorized_xclient_hosts; Dovecot's SASL then sees and penalises the client's
// address, not the gate's), says EHLO again and logs in with AUTH PLAIN. It returns the
// backend seen through the post-login filter (smtprelay.go) and the backend's 235 line,
// relayed to the client.
func (smtp) backendLogin(ctx context.Context, s *session, user string, pass secret) (net.Conn, *bufio.Reader, string, error) {
	bo := s.st.opts.SMTP.Backend
	if bo.Address == "" {
		return nil, nil, "", errors.New("backend: no SMTP backend configured (smtp.backend.address)")
	}
	// The client's EHLO name, as a direct client would give it (Postfix puts it in
	// the Received line); the gate's own when the client gave none, or one that is
	// not ASCII (a backend may refuse it, and that is no reason to fail the login).
	helo := s.client
	if helo == "" || printable(helo) == "" {
		helo = s.st.opts.SMTP.Hostname
	}
	var caps []string
	raw, c, br, end, err := s.openBackend(ctx, &bo, func(ctx context.Context, raw net.Conn) (c net.Conn, br *bufio.Reader, err error) {
		c, br, caps, err = smtpGreeting(ctx, raw, &bo, helo)
		return c, br, err
	})
	if err != nil {
		return nil, nil, "", err
	}
	defer end()
	fail := func(err error) (net.Conn, *bufio.Reader, string, error) {
		raw.Close()
		return nil, nil, "", err
	}
	if !smtpHasCap(caps, "XCLIENT") {
		s.log.Warn("backend does not offer XCLIENT; client address not forwarded: add the gate's address to Postfix's smtpd_authorized_xclient_hosts", "backend", bo.Address)
	} else {
		addr := s.remote.Addr().Unmap()
		a := addr.String()
		if addr.Is6() {
			a = "IPV6:" + a // Postfix's spelling of an IPv6 address in XCLIENT
		}
		fmt.Fprintf(c, "XCLIENT NAME=[UNAVAILABLE] ADDR=%s PORT=%d\r\n", a, s.remote.Port())
		code, l, err := smtpReadReply(br)
		if err != nil {
			return fail(fmt.Errorf("backend: XCLIENT: %w", err))
		}
		if code != 220 {
			return fail(fmt.Errorf("backend: %s refused XCLIENT (%.200q): add the gate's address to Postfix's smtpd_authorized_xclient_hosts", bo.Address, l))
		}
		if caps, err = smtpEHLOBackend(c, br, helo, bo.Address); err != nil {
			return fail(err)
		}
	}
	if !smtpHasAuthPlain(caps) {
		return fail(fmt.Errorf("backend: %s does not offer AUTH PLAIN to the gate: enable SASL (smtpd_sasl_auth_enable) on the submission service, and allow it without TLS from the gate or set smtp.backend.tls", bo.Address))
	}

	// From here the credentials are on their way: a 535 is a wrong password (counted
	// by the throttle), a 4xx or a refusal of the gate's TLS the backend's trouble (not
	// counted: the user did nothing wrong), any other answer a counted refusal.
	if err := sendAuthPlain(c, user, pass); err != nil {
		return fail(err)
	}
	code, l, err := smtpReadReply(br)
	if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
		return fail(fmt.Errorf("backend: no answer to AUTH within smtp.backend.login_timeout (%s): %w; Dovecot delays logins from an address after failures: check that XCLIENT forwards the client's address, or raise the timeout", bo.LoginTimeout, err))
	}
	if err != nil {
		return fail(fmt.Errorf("backend: AUTH: %w", err))
	}
	l = printable(l)
	switch {
	case code == 235:
	case code == 535:
		return fail(errAuthFailed("backend refused the login: " + l))
	case code >= 400 && code < 500:
		return fail(fmt.Errorf("backend: %s answered AUTH with %.200q (temporary)", bo.Address, l))
	case mentionsTransport(l):
		// Postfix's "530 5.7.0 Must issue a STARTTLS command first", "538 5.7.11
		// Encryption required…": the backend refuses the gate's link, not the
		// password (backendAtFault), so nobody is charged for it.
		return fail(&errBackendConfig{answer: fmt.Sprintf("%.200q", l)})
	default:
		return fail(&errLoginRefused{answer: fmt.Sprintf("%.200q", l)})
	}
	if l == "" {
		l = "235 2.7.0 Authentication successful"
	}
	c.SetDeadline(time.Time{})
	relay := newSMTPRelay(c, br, s.log.With("user", user), s.wr.lim.MaxLine)
	return relay, bufio.NewReaderSize(relay, 16), l, nil
}

// smtpGreeting reads the submission server's greeting, says EHLO and brings up TLS as
// configured (implicit at once, or STARTTLS after EHLO and EHLO again). It returns the
// connection, its reader and the EHLO keywords.
func smtpGreeting(ctx context.Context, raw net.Conn, bo *BackendOptions, helo string) (net.Conn, *bufio.Reader, []string, error) {
	c := raw
	if bo.TLS == BackendImplicitTLS {
		tc, err := backendHandshake(ctx, raw, bo)
		if err != nil {
			return nil, nil, nil, err
		}
		c = tc
	}
	br := bufio.NewReaderSize(c, 4096)
	code, greet, err := smtpReadReply(br)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("backend: greeting from %s: %w", bo.Address, err)
	}
	if code != 220 {
		return nil, nil, nil, fmt.Errorf("backend: unexpected SMTP greeting from %s: %.100q", bo.Address, greet)
	}
	caps, err := smtpEHLOBackend(c, br, helo, bo.Address)
	if err != nil || bo.TLS != BackendStartTLS {
		return c, br, caps, err
	}
	io.WriteString(c, "STARTTLS\r\n")
	code, l, err := smtpReadReply(br)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("backend: STARTTLS at %s: %w", bo.Address, err)
	}
	if code != 220 {
		return nil, nil, nil, fmt.Errorf("backend: %s refused STARTTLS (%.100q): enable TLS in the submission service, or set smtp.backend.tls to implicit for a port 465", bo.Address, l)
	}
	if br.Buffered() > 0 {
		return nil, nil, nil, fmt.Errorf("backend: %s sent data after its STARTTLS 220, before the TLS handshake; refusing the connection", bo.Address)
	}
	tc, err := backendHandshake(ctx, raw, bo)
	if err != nil {
		return nil, nil, nil, err
	}
	br = bufio.NewReaderSize(tc, 4096)
	caps, err = smtpEHLOBackend(tc, br, helo, bo.Address)
	return tc, br, caps, err
}

// smtpEHLOBackend says EHLO and returns the keyword lines of the reply.
func smtpEHLOBackend(c net.Conn, br *bufio.Reader, helo, addr string) ([]string, error) {
	if _, err := io.WriteString(c, "EHLO "+helo+"\r\n"); err != nil {
		return nil, fmt.Errorf("backend: send EHLO: %w", err)
	}
	var caps []string
	for n := 0; ; n++ {
		l, err := readLine(br, maxBackendLine)
		if err != nil {
			return nil, fmt.Errorf("backend: EHLO at %s: %w", addr, err)
		}
		if len(l) < 4 || !strings.HasPrefix(l, "250") || n > smtpMaxReplyLines {
			return nil, fmt.Errorf("backend: %s refused EHLO (%.100q)", addr, l)
		}
		if n > 0 {
			caps = append(caps, l[4:])
		}
		if l[3] != '-' {
			return caps, nil
		}
	}
}

// smtpReadReply reads one reply (all its lines) and returns its code and last line.
func smtpReadReply(br *bufio.Reader) (int, string, error) {
	for n := 0; ; n++ {
		l, err := readLine(br, maxBackendLine)
		if err != nil {
			return 0, "", err
		}
		if len(l) < 3 || n > smtpMaxReplyLines {
			return 0, "", fmt.Errorf("not an SMTP reply: %.100q", l)
		}
		code := 0
		for _, c := range l[:3] {
			if c < '0' || c > '9' {
				return 0, "", fmt.Errorf("not an SMTP reply: %.100q", l)
			}
			code = code*10 + int(c-'0')
		}
		if len(l) == 3 || l[3] != '-' {
			return code, l, nil
		}
	}
}

// smtpHasCap reports whether the EHLO keywords list name.
func smtpHasCap(caps []string, name string) bool {
	for _, c := range caps {
		kw, _, _ := strings.Cut(c, " ")
		if strings.EqualFold(kw, name) {
			return true
		}
	}
	return false
}

// smtpHasAuthPlain reports whether the EHLO keywords offer AUTH PLAIN.
func smtpHasAuthPlain(caps []string) bool {
	for _, c := range caps {
		// "AUTH PLAIN LOGIN", or the old spelling "AUTH=PLAIN LOGIN".
		f := strings.Fields(strings.Replace(strings.ToUpper(c), "AUTH=", "AUTH ", 1))
		if len(f) > 0 && f[0] == "AUTH" {
			for _, m := range f[1:] {
				if m == "PLAIN" {
					return true
				}
			}
		}
	}
	return false
}
