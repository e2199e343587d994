// Package crl keeps a verified, immutable snapshot of one issuer's certificate
// revocation list, refreshed from the CA's /crl endpoint (with If-None-Match) or from a
// file, so that relying parties — the IMAPS front first of all — can check a serial
// without a lock and without talking to the CA on the hot path.
//
// A [Store] polls its source, verifies every new CRL (signature by the configured
// issuer, issuer name, thisUpdate/nextUpdate, a complete CRL — no delta CRL, partition,
// indirect CRL or unknown critical extension —, a CRL number that never goes backwards
// or disappears, across restarts too when a state file is set) and swaps it in behind an
// atomic pointer. The signature is checked over the raw bytes before any entry is parsed,
// so a forged CRL costs a hash; the entries go straight into an index whose lookup
// neither allocates nor locks. [Store.Fresh] fails closed: once the CRL is past
// nextUpdate plus a grace period, or has not been confirmed for MaxAge, it returns an
// error and callers must refuse new connections; [Store.OnStale] tells them when that
// starts, so that they can end what they let in before.
//
// It is not a CA: it never signs a CRL, and it does not know how revocations are stored
// (see package ca). It imports nothing of imapgate.
package crl
