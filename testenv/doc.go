// Package testenv starts real parts on 127.0.0.1 for tests and the demo: a CA
// (the real ca package, served over HTTPS), PostgreSQL, Dovecot, SoftHSM2 tokens,
// a throwaway PKI. Each start registers its own stop with t.Cleanup.
//
// Only tests import it; no production package does.
package testenv
