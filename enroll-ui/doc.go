// Package enrollui is the help desk's web UI: `imapgate enroll-ui`.
//
// It runs on the help desk PC next to the card reader, listens on 127.0.0.1
// by default, drives the local tokens through package pkcs11 and talks to the
// CA only through its HTTPS API (package caclient) with the PC's
// enrollment-agent credential; an admin credential, when configured, unlocks
// revocation. Pages are rendered on the server with html/template from files
// embedded in the binary, and work without JavaScript; a small script
// refreshes the token list and the progress of an enrollment.
//
// Security: a session starts with the random access token printed at start-up
// or an operator password checked against a bcrypt hash from the config; the
// session cookie is HttpOnly and SameSite=Strict (Secure over TLS); every POST
// carries the session's CSRF token; the Host header must name the listen
// address; pages carry a strict Content-Security-Policy, X-Frame-Options DENY
// and Cache-Control no-store. PINs live only for the request (or the
// enrollment job) that uses them: they are never logged, stored or written
// back into a form. Every action is one line in the audit log and a record in
// the CA's audit trail.
//
// It is not the CA and not the front: it imports neither package ca nor mtls.
package enrollui
