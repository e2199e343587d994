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

// POP3Options are the POP3 gate's own settings; everything else (TLS, CRLs,
// identity, throttle, limits, timeouts) is shared with IMAP.
type POP3Options struct {
	// Backend is the POP3 server behind the gate (Dovecot's pop3-login, port 110, or
	// 995 with TLS implicit). Its address is required for Server.ServePOP3.
	Backend BackendOptions
}

func (pop3) backendAddress(o *Options) string { return o.POP3.Backend.Address }

// backendLogin dials the POP3 server, forwards the client's address with XCLIENT
// (Dovecot's pop3-login takes it from login_trusted_networks, and then logs and
// penalises the client's address instead of the gate's), then AUTH PLAIN. It returns
// the connection, its reader and the backend's "+OK" line, relayed to the client.
func (pop3) backendLogin(ctx context.Context, s *session, user string, pass secret) (net.Conn, *bufio.Reader, string, error) {
	bo := s.st.opts.POP3.Backend
	if bo.Address == "" {
		return nil, nil, "", errors.New("backend: no POP3 backend configured (pop3.backend.address)")
	}
	raw, c, br, end, err := s.openBackend(ctx, &bo, func(ctx context.Context, raw net.Conn) (net.Conn, *bufio.Reader, error) {
		return pop3Greeting(ctx, raw, &bo)
	})
	if err != nil {
		return nil, nil, "", err
	}
	defer end()
	fail := func(err error) (net.Conn, *bufio.Reader, string, error) {
		raw.Close()
		return nil, nil, "", err
	}
	fmt.Fprintf(c, "XCLIENT ADDR=%s PORT=%d SESSION=%s\r\n", s.remote.Addr().Unmap(), s.remote.Port(), s.id)
	if l, err := readLine(br, maxBackendLine); err != nil {
		return fail(fmt.Errorf("backend: XCLIENT: %w", err))
	} else if !strings.HasPrefix(l, "+OK") {
		s.log.Warn("backend refused XCLIENT; client address not forwarded: add the gate's address to Dovecot's login_trusted_networks", "backend_reply", printable(fmt.Sprintf("%.200s", l)))
	}

	// From here the credentials are on their way: an answer other than +OK is a
	// refusal of this login, counted by the throttle.
	if err := sendAuthPlain(c, user, pass); err != nil {
		return fail(err)
	}
	l, err := readLine(br, maxBackendLine)
	if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
		return fail(fmt.Errorf("backend: no answer to AUTH within pop3.backend.login_timeout (%s): %w; add the gate's address to Dovecot's login_trusted_networks, or raise the timeout", bo.LoginTimeout, err))
	}
	if err != nil {
		return fail(fmt.Errorf("backend: AUTH: %w", err))
	}
	l = printable(l)
	switch {
	case strings.HasPrefix(l, "+OK"):
	case strings.HasPrefix(l, "-ERR") && backendAtFault(respCode(strings.TrimPrefix(strings.TrimPrefix(l, "-ERR"), " ")), l):
		return fail(&errBackendConfig{answer: fmt.Sprintf("%.200q", l)})
	case strings.HasPrefix(l, "-ERR [AUTH]"), l == "-ERR", strings.HasPrefix(l, "-ERR ") && !strings.HasPrefix(l, "-ERR ["):
		return fail(errAuthFailed("backend refused the login: " + l))
	default:
		return fail(&errLoginRefused{answer: fmt.Sprintf("%.200q", l)})
	}
	c.SetDeadline(time.Time{})
	return c, br, l, nil
}

// pop3Greeting reads the POP3 server's greeting and brings up TLS as configured.
func pop3Greeting(ctx context.Context, raw net.Conn, bo *BackendOptions) (net.Conn, *bufio.Reader, error) {
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
	if !strings.HasPrefix(greet, "+OK") {
		return nil, nil, fmt.Errorf("backend: unexpected POP3 greeting from %s: %.100q", bo.Address, greet)
	}
	if bo.TLS != BackendStartTLS {
		return c, br, nil
	}
	io.WriteString(c, "STLS\r\n")
	l, err := readLine(br, maxBackendLine)
	if err != nil {
		return nil, nil, fmt.Errorf("backend: STLS at %s: %w", bo.Address, err)
	}
	if !strings.HasPrefix(l, "+OK") {
		return nil, nil, fmt.Errorf("backend: %s refused STLS (%.100q): enable TLS in the POP3 server, or set pop3.backend.tls to implicit for a pop3s port", bo.Address, l)
	}
	if br.Buffered() > 0 {
		return nil, nil, fmt.Errorf("backend: %s sent data after its STLS +OK, before the TLS handshake; refusing the connection", bo.Address)
	}
	tc, err := backendHandshake(ctx, raw, bo)
	if err != nil {
		return nil, nil, err
	}
	return tc, bufio.NewReaderSize(tc, 4096), nil
}
