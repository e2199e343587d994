// Package mtls is imapgate's mTLS gate for IMAP (and POP3 and SMTP submission, see Protocols below): it accepts a TLS connection only with a valid,
// unrevoked client certificate from the configured CA, serves the few IMAP commands a
// client sends before login itself, binds the login name to the certificate's e-mail
// address, logs in to the real IMAP server (Dovecot) with the user's password and only
// then splices the two connections together.
//
// A connection goes: accept (optional PROXY v2 header, proxy.go; per-address limits,
// limits.go) → session lifecycle (session.go) → TLS handshake with a deadline
// (handshake.go) → certificate policy (certpolicy.go: chain, clientAuth, validity, and
// one checkRevocation against the CRL; a failure is told to the user as
// "* BYE [ALERT] …") → greeting and the pre-auth loop with its explicit phase
// (preauth.go, parsed by wire.go) → login (login.go: the throttle of throttle.go, the
// identity binding of identity.go, the backend login of backend.go; plain TCP,
// implicit TLS or STARTTLS to the backend, its certificate always verified) → splice
// (splice.go). Every text a user reads is a named reply in errors.go.
//
// Protocols. Everything above except the greeting, the pre-auth dialect, the backend
// login and the spelling of replies is shared by every protocol the gate serves: the
// TLS policy, the certificate and CRL checks, the identity binding, the throttle and
// lockout (one instance: failures on any protocol count against the same
// certificate), PROXY v2 intake, the per-address limits, the registry (a revoked
// card's sessions end on every protocol), logs and metrics. What differs is the small
// protocol interface of protocol.go, one implementation per protocol in files of its
// own:
//
//   - imap (protocol.go, wrapping preauth.go, wire.go, backend.go, errors.go):
//     Server.Serve.
//   - pop3 (pop3.go: CAPA, USER/PASS, AUTH PLAIN, STLS, QUIT and the RFC 3206 codes;
//     pop3backend.go: XCLIENT then AUTH PLAIN at Dovecot's POP3): Server.ServePOP3,
//     backend in Options.POP3.
//   - smtp, submission (smtp.go: EHLO/HELO, STARTTLS, AUTH PLAIN and LOGIN, RSET,
//     NOOP, QUIT, 530 before AUTH; smtpbackend.go: EHLO, XCLIENT, EHLO, AUTH PLAIN at
//     Postfix; smtprelay.go: the post-login filter that keeps XCLIENT, XFORWARD,
//     STARTTLS and BDAT from the backend and CHUNKING from the client): Server.ServeSMTP,
//     backend in Options.SMTP.
//
// POP3 and SMTP, one command per line, share the pre-auth loop of lineloop.go.
//
// A new protocol adds its own <proto>.go and <proto>backend.go, a Serve method, and
// its backend options; it never copies the core.
//
// Live sessions sit in a registry (registry.go), touched only by the Server
// (server.go), so that a CRL that newly lists a serial ends its sessions, and a CRL
// that goes stale ends those of its CA.
//
// Hot state — the TLS configuration and everything built from the config — is an
// immutable snapshot behind an atomic pointer; Reload builds a new one and swaps it. The
// lifecycle is New (validate once, options.go, then build) → Run/Serve (until the
// context ends) → Close. `imapgate front` runs from a YAML file (config.go, run.go);
// a reload is one runner.apply (reload.go).
//
// It does not issue or store certificates and imports neither package ca nor pkcs11: it
// learns revocation from the CRL (package crl), like any relying party.
package mtls
