package mtls

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"time"
)

// provedAtLabel marks the session ticket's extra data that carries when the full
// handshake that proved the client's key took place (8 bytes, Unix seconds).
var provedAtLabel = []byte("imapgate-proved-at:")

// sessionTLS is the TLS configuration for one connection's handshake; the caller calls
// done once the handshake has returned. With session tickets on, it bounds resumption
// by tls.resumption_max_age counted from the full handshake in which the client proved
// its key (signed with its smartcard), not from the last ticket: Go issues a fresh
// ticket on every resumption, so without this a client that resumes now and then would
// never need its card again. The time travels inside the ticket (encrypted with the
// ticket keys, so it holds across fronts that share them) and a resumed connection
// passes the original time on to its new ticket. A ticket without it, or older than
// the bound, makes a full handshake.
//
// Passing the time on needs a place per handshake (UnwrapSession learns it,
// WrapSession uses it), hence a configuration per handshake; they are pooled per state
// rather than cloned for every connection. A pooled one is handed out again only after
// the handshake that had it returned: crypto/tls calls UnwrapSession and WrapSession
// only inside the server's handshake (it sends its one ticket there), and what the
// finished connection still reads of its configuration never changes.
//
// The same place per handshake names the connection's heldWrites, which the
// configuration's VerifyConnection tells to hold the ticket of a full TLS 1.3 handshake
// for the greeting (heldwrites.go). Without tickets there is nothing to hold.
func (st *state) sessionTLS(hw *heldWrites) (cfg *tls.Config, done func()) {
	if st.tls.SessionTicketsDisabled {
		return st.tls, func() {}
	}
	tc := st.ticketConfigs.Get().(*ticketConfig)
	tc.provedAt = time.Time{}
	tc.hw = hw
	return tc.cfg, func() {
		tc.hw = nil // the pool must not keep the session alive
		st.ticketConfigs.Put(tc)
	}
}

// ticketConfig is a handshake's configuration, its place for the proof time and its
// connection's heldWrites.
type ticketConfig struct {
	cfg      *tls.Config
	provedAt time.Time // set when this handshake's ticket was accepted
	hw       *heldWrites
}

// newTicketConfig builds a pooled configuration for st (st.ticketConfigs.New).
func (st *state) newTicketConfig() *ticketConfig {
	base := st.tls
	maxAge, now := st.opts.ResumptionMaxAge, st.opts.now
	tc := &ticketConfig{cfg: base.Clone()}
	tc.cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if holdTicket(cs) {
			tc.hw.hold()
		}
		return nil // verifyPeer checks the certificate after the handshake
	}
	tc.cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := base.DecryptTicket(identity, cs)
		if err != nil || ss == nil {
			return nil, err
		}
		t, ok := ticketProvedAt(ss.Extra)
		if age := now().Sub(t); !ok || age > maxAge || age < -time.Minute {
			return nil, nil // a full handshake: the card must prove the key again
		}
		tc.provedAt = t
		return ss, nil
	}
	tc.cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		t := now()
		if cs.DidResume && !tc.provedAt.IsZero() {
			t = tc.provedAt
		}
		ss.Extra = appendProvedAt(ss.Extra, t)
		return base.EncryptTicket(cs, ss)
	}
	return tc
}

// provedAtExtra is a ticket's proof-time entry and, for the common ticket that has no
// other extra data, the one-element list that holds it: one allocation per ticket, where
// bytes.Clone of the label, the append of the time and the append to Extra made three.
type provedAtExtra struct {
	list [1][]byte
	b    [len("imapgate-proved-at:") + 8]byte
}

// appendProvedAt adds the proof time t to a ticket's extra data.
func appendProvedAt(extra [][]byte, t time.Time) [][]byte {
	e := new(provedAtExtra)
	n := copy(e.b[:], provedAtLabel)
	binary.BigEndian.PutUint64(e.b[n:], uint64(t.Unix()))
	if len(extra) == 0 {
		e.list[0] = e.b[:]
		return e.list[:]
	}
	return append(extra, e.b[:])
}

// ticketProvedAt reads the proof time from a ticket's extra data.
func ticketProvedAt(extra [][]byte) (time.Time, bool) {
	for _, e := range extra {
		if v, ok := bytes.CutPrefix(e, provedAtLabel); ok && len(v) == 8 {
			return time.Unix(int64(binary.BigEndian.Uint64(v)), 0), true
		}
	}
	return time.Time{}, false
}
