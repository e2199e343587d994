package mtls

import (
	"crypto/tls"
	"net"
)

// heldWrites is the client's socket as crypto/tls sees it. Its one job is to save a
// write system call (and a TCP segment) on every full TLS 1.3 handshake: crypto/tls
// writes the NewSessionTicket on its own, after the client's CertificateVerify,
// because with a client certificate requested the ticket can only be made once the
// client's flight is in; the greeting follows a moment later as a second write. Held
// here, the ticket goes out with the greeting, in one write.
//
// hold is called from the handshake's VerifyConnection (ticketConfig), only for a
// full TLS 1.3 handshake: there crypto/tls has flushed its whole flight before it
// calls VerifyConnection (in readClientCertificate, either branch), so what follows
// is the ticket and, on a failure, an alert — nothing the client waits for before it
// sends its Finished. A TLS 1.2 resumption writes its flight after VerifyConnection
// and then waits for the client: holding there would stall both sides until the
// handshake timeout. A resumed TLS 1.3 handshake sends its ticket inside its first
// flight (no client certificate to wait for), so it has nothing to gain.
//
// After the handshake, handshake calls release (success: the held bytes go out in
// front of the next write, the greeting or the refusal's BYE, or the close_notify of
// lingerClose) or flush (failure: the alert must reach the client, and STARTTLS, where
// the client speaks next and no line of ours follows). A connection closed in
// between (kill, shutdown) drops what is held, as it would drop unsent bytes anyway.
//
// No lock: every write through it is crypto/tls's, made under the tls.Conn's own
// output lock, and hold, release and flush run on the session's goroutine before
// anything else can write (kill writes only once the session has a peer, which
// handshake publishes after release).
type heldWrites struct {
	net.Conn
	held    []byte
	holding bool
}

// heldRoom is what a held buffer has room for beyond the ticket: a greeting record.
const heldRoom = 256

func (w *heldWrites) Write(p []byte) (int, error) {
	if w.holding {
		// crypto/tls reuses its record buffer: copy.
		if w.held == nil {
			w.held = make([]byte, 0, len(p)+heldRoom)
		}
		w.held = append(w.held, p...)
		return len(p), nil
	}
	if w.held == nil {
		return w.Conn.Write(p)
	}
	b := append(w.held, p...)
	w.held = nil
	n, err := w.Conn.Write(b)
	// What the caller learns is about its own bytes.
	n -= len(b) - len(p)
	return max(n, 0), err
}

// hold keeps every write from now on until release or flush.
func (w *heldWrites) hold() { w.holding = true }

// release stops holding; what is held goes out with the next write.
func (w *heldWrites) release() { w.holding = false }

// flush stops holding and writes what is held now.
func (w *heldWrites) flush() error {
	w.holding = false
	if w.held == nil {
		return nil
	}
	b := w.held
	w.held = nil
	_, err := w.Conn.Write(b)
	return err
}

// holdTicket is VerifyConnection's test: a full TLS 1.3 handshake (see heldWrites).
func holdTicket(cs tls.ConnectionState) bool {
	return cs.Version == tls.VersionTLS13 && !cs.DidResume
}
