// Package loadgen is imapgate's load generator: it drives an IMAPS server on loopback
// (the front, nginx's mail proxy, Dovecot, the bare Go anchor of bench/baretls) with
// full or resumed mTLS handshakes, LOGIN+LOGOUT, or many sessions left in IDLE, and
// reports connections per second, errors and latency percentiles as JSON. It is a
// benchmark tool (cmd/imapgate-load, scripts/bench.sh, docs/performance.md), not part
// of the front.
package loadgen
