// Package mtls is imapgate's IMAPS front: it accepts a TLS connection only with a valid,
// unrevoked client certificate from the configured CA, serves the few IMAP commands a
// client sends before login itself, binds the login name to the certificate's e-mail
// address, logs in to the real IMAP server (Dovecot) with the user's password and only
// then splices the two connections together.
//
// A connection goes: accept (optional PROXY v2 header, per-IP limits) → TLS handshake
// with a deadline → certificate checks (chain, clientAuth, validity, CRL; a failure is
// told to the user as "* BYE [ALERT] …") → greeting and pre-auth loop (preauth.go, parsed
// by wire.go) → identity binding (identity.go) → backend login and splice (backend.go;
// plain TCP, implicit TLS or STARTTLS to the backend, its certificate always verified).
// Live sessions sit in a registry (revocation.go) so that a CRL that newly lists a
// serial ends its sessions, and a CRL that goes stale ends those of its CA.
//
// Hot state — the TLS configuration and everything built from the config — is an
// immutable snapshot behind an atomic pointer; Reload builds a new one and swaps it. The
// lifecycle is New (build + validate) → Run/Serve (until the context ends) → Close.
//
// It does not issue or store certificates and imports neither package ca nor pkcs11: it
// learns revocation from the CRL (package crl), like any relying party.
package mtls
