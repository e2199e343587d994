// Package e2e holds end-to-end tests that drive imapgate as a deployment runs
// it — the built imapgate binary (token enroll, cert revoke, front with its YAML
// configuration), the real CA, Dovecot and a SoftHSM2 card — from a real mail
// program (Thunderbird, over Marionette). It has no code of its own beyond the
// tests; the parts it starts live in testenv.
//
// The tests sit here rather than beside a package's own because they cross all
// of them: they build and run cmd/imapgate as a separate process and talk to it
// only through its files, ports and command line.
package e2e
