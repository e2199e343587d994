package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"time"
)

// newTLSConfig is the TLS policy: TLS 1.2 or later, modern AEAD suites only for 1.2, and
// a client certificate requested but verified by verifyPeer after the handshake, so that
// a rejected user gets a readable "* BYE [ALERT] …" instead of a bare TLS alert.
func newTLSConfig(o *Options, acceptable *x509.CertPool) *tls.Config {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: o.Certificates,
		ClientAuth:   tls.RequestClientCert,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos: []string{"imap"},
		// Not used to verify (verifyPeer does that): with RequestClientCert the pool only
		// names the acceptable CAs in the CertificateRequest (acceptableCAs).
		ClientCAs: acceptable,
	}
	if len(o.SessionTicketKeys) > 0 {
		cfg.SetSessionTicketKeys(o.SessionTicketKeys)
	}
	if o.DisableSessionTickets {
		cfg.SessionTicketsDisabled = true
	}
	if o.Time != nil {
		cfg.Time = o.Time
	}
	return cfg
}

// acceptableCAs is the list of CA names the CertificateRequest sends: the roots and
// every intermediate the front knows (tls.client_intermediates_file and the issuers
// of the CRL sources). NSS (Thunderbird) offers only a certificate it can link to a
// listed CA; a smartcard that holds just the user's leaf names the intermediate as
// its issuer, so with the roots alone its certificate was never offered.
func acceptableCAs(o *Options) *x509.CertPool {
	pool := x509.NewCertPool()
	if o.ClientRoots != nil {
		pool = o.ClientRoots.Clone()
	}
	for _, c := range o.ClientIntermediates {
		pool.AddCert(c)
	}
	for _, s := range o.CRLs {
		pool.AddCert(s.Issuer())
	}
	return pool
}

// handshake runs TLS with a deadline and checks the client certificate (certpolicy.go),
// then registers the session with its certificate and checks revocation once more. On a
// refused certificate the user gets "* BYE [ALERT] why" over the finished TLS
// connection. The context is not consulted: the end of the server reaches a handshake
// through the registry (kill closes the connection), see below.
func (s *session) handshake(_ context.Context) bool {
	// A STARTTLS client may start its handshake long after it connected, with reloads
	// in between (and the CRL sources of then stopped): it gets the configuration of now.
	st := s.srv.st.Load()
	s.st = st
	if !s.srv.conns.handshakeAllowed(s.remote.Addr(), &st.opts.Limits, time.Now()) {
		s.srv.metrics.handshake("limited").Inc()
		s.log.Warn("handshake refused", "event", "handshake", "result", "limited", "reason", "too many handshakes from this address")
		return false
	}
	s.hw.Conn = s.raw
	cfg, done := st.sessionTLS(&s.hw)
	tc := tls.Server(&s.hw, cfg)
	// A deadline on the socket bounds the handshake, not a context: a child context per
	// connection registers with the server-wide parent (one Done channel shared by every
	// connection on every core), starts a timer, and HandshakeContext adds an AfterFunc
	// on top — 1.4 % of a full handshake's CPU, 3.9 % of a resumed one's
	// (docs/performance.md). Shutdown and Close still end a handshake in flight: the
	// session is in the registry from before it (run tracks it first), and their kill
	// closes its connection, which makes Handshake return at once.
	//
	// The deadline is left in place afterwards, one call fewer per connection: whatever
	// comes next sets its own before it waits (write, the pre-auth loops' reads,
	// lingerClose, kill), and nothing reads or writes the client in between.
	s.raw.SetDeadline(time.Now().Add(st.opts.HandshakeTimeout))
	err := tc.Handshake()
	done()
	if err != nil {
		s.hw.flush() // an alert written while the ticket was held
		result := "tls_error"
		if errors.Is(err, os.ErrDeadlineExceeded) {
			result = "timeout"
		}
		s.srv.metrics.handshake(result).Inc()
		s.log.Warn("handshake failed", "event", "handshake", "result", result, "reason", err.Error())
		return false
	}
	// The ticket of a full TLS 1.3 handshake goes out with the next line: the
	// greeting, or the BYE of a refusal below (heldwrites.go).
	s.hw.release()
	s.conn = tc
	s.br.Reset(tc)
	cs := tc.ConnectionState()
	p, seen, rej := st.verifyPeer(cs, time.Now())
	if rej != nil {
		log := s.log
		if len(cs.PeerCertificates) > 0 {
			log = log.With("serial", leafSerial(cs), "subject", cs.PeerCertificates[0].Subject.String())
		}
		s.refuse(log, rej)
		return false
	}
	s.peer.Store(p) // from here s.log's lines carry its serial and subject (sessionLog)
	// A certificate that expires during a long session (IDLE for days) ends it then.
	s.expiry = time.AfterFunc(time.Until(p.leaf.NotAfter), func() {
		s.log.Info("session ended: certificate expired", "event", "expired", "result", "expired", "reason", "certificate expired during the session")
		s.kill(byeCertExpiredNow)
	})
	// Look again, in the configuration of now: between the check and the registration
	// above a CRL may have landed or gone stale, or a reload may have replaced the CRL
	// sources; the registry walks that these make see the session from here on.
	if rej := s.srv.st.Load().recheckRevocation(p, seen, time.Now()); rej != nil {
		s.refuse(s.log, rej)
		return false
	}
	s.phase = phaseTLS
	s.srv.metrics.handshake("ok").Inc()
	// Guarded: the arguments of a line that is off are still worked out and boxed.
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("handshake ok", "event", "handshake", "result", "ok", "resumed", p.resumed, "tls_version", tls.VersionName(cs.Version))
	}
	return true
}

// refuse counts, logs and tells the user a refused certificate.
func (s *session) refuse(log *slog.Logger, rej *certReject) {
	s.srv.metrics.handshake(rej.result).Inc()
	log.Warn("certificate refused", "event", "handshake", "result", rej.result, "reason", rej.reply.Reason)
	s.write(s.say(rej.reply, "*"))
}

func leafSerial(cs tls.ConnectionState) string {
	return serialHex(cs.PeerCertificates[0].SerialNumber)
}

// upgradeTLS is the common end of IMAP's STARTTLS, POP3's STLS and SMTP's STARTTLS once
// the command itself was accepted: bytes pipelined after it are refused with inject
// (they would be read as if sent inside the TLS session, CVE-2011-0411), then ready
// is written and the handshake run, and what was said in the clear is forgotten (the
// client's name, the bad-command count; the caller forgets its own dialect's state).
// done is true when the session is over.
func (s *session) upgradeTLS(ctx context.Context, ready string, inject *Reply) (done bool, err error) {
	if s.br.Buffered() > 0 {
		return false, inject
	}
	if s.write(ready) != nil || !s.handshake(ctx) {
		return true, nil
	}
	// After STARTTLS the client speaks next: no line of ours would carry the ticket
	// before the client's next command is answered, so it goes out now.
	if s.hw.flush() != nil {
		return true, nil
	}
	s.client, s.bad = "", 0
	return false, nil
}
