package mtls

import (
	"bufio"
	"context"
	"net"
)

// protocol is what one mail protocol adds to the shared gate (TLS policy, certificate
// and CRL checks, identity binding, throttle and lockout, PROXY v2 intake, the
// live-session registry, logs and metrics, the splice): its greeting, its pre-auth
// dialect, its backend login and how its replies are spelled. IMAP is preauth.go,
// backend.go and errors.go; POP3 is pop3*.go, SMTP smtp*.go.
type protocol interface {
	// name is the protocol's label in logs ("imap", "pop3", "smtp").
	name() string
	// greet sends the greeting: tlsOn on an implicit-TLS port after the handshake.
	greet(s *session, tlsOn bool) error
	// preauth reads and answers commands until a login (s.proxied set), the end of
	// the session or an error; handshake runs STARTTLS/STLS, login the login.
	preauth(ctx context.Context, s *session)
	// backendLogin dials the backend, forwards the client's address and logs in as
	// user; see session.login for the errors it must return.
	backendLogin(ctx context.Context, s *session, user string, pass secret) (net.Conn, *bufio.Reader, string, error)
	// backendAddress is the backend's host:port in o, for the log.
	backendAddress(o *Options) string
	// loggedIn is the line telling the client the login succeeded (caps: the
	// backend's post-login capabilities, if the protocol relays them).
	loggedIn(tag, caps string) string
	// reply spells r (a NO, BAD or BYE of the shared core: certificate problems,
	// lockouts, revocation, shutdown) in this protocol, tagged with tag where it has
	// tags. A BYE ends the session.
	reply(r *Reply, tag string) string
}

// imap is the IMAP dialect: the pre-auth loop of preauth.go, the backend login of
// backend.go, the replies of errors.go.
type imap struct{}

func (imap) name() string { return "imap" }

func (imap) greet(s *session, tlsOn bool) error {
	if tlsOn {
		return s.write("* OK [CAPABILITY " + capsTLS + "] imapgate ready.\r\n")
	}
	return s.write("* OK [CAPABILITY " + capsPlain + "] imapgate ready; STARTTLS with your smartcard certificate first.\r\n")
}

func (imap) preauth(ctx context.Context, s *session) { s.loop(ctx) }

func (imap) backendLogin(ctx context.Context, s *session, user string, pass secret) (net.Conn, *bufio.Reader, string, error) {
	return s.backendLogin(ctx, user, pass)
}

func (imap) backendAddress(o *Options) string { return o.Backend.Address }

func (imap) loggedIn(tag, caps string) string {
	return tag + " OK [CAPABILITY " + caps + "] Logged in.\r\n"
}

func (imap) reply(r *Reply, tag string) string { return r.line(tag) }

// say spells r in the session's protocol.
func (s *session) say(r *Reply, tag string) string { return s.proto.reply(r, tag) }
