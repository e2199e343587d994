package mtls

import (
	"errors"
	"fmt"
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Limits bound what one address (and everyone together) may hold or start. An IPv6
// client's address is its /64 (groupAddr).
type Limits struct {
	// MaxConnections open at once, all addresses; default 10000.
	MaxConnections int
	// MaxConnectionsPerIP open at once from one address; default 50.
	MaxConnectionsPerIP int
	// HandshakesPerIPPerMinute started by one address; default 120. A burst of this
	// many is allowed, then they refill evenly over the minute.
	HandshakesPerIPPerMinute int
	// PreAuthShare is the percentage of MaxConnections that connections not logged in
	// (yet) may hold together; default 50. The rest stays for logged-in sessions, so
	// that unauthenticated connections never take the room of IDLE users. 100 turns
	// the reservation off.
	PreAuthShare int
	// MaxPlainCommands is how many commands a client on the STARTTLS port may send
	// before STARTTLS; default 10.
	MaxPlainCommands int
}

func (l *Limits) validate() error {
	if l.MaxConnections < 0 || l.MaxConnectionsPerIP < 0 || l.HandshakesPerIPPerMinute < 0 || l.MaxPlainCommands < 0 {
		return errors.New("mtls: limits must not be negative")
	}
	if l.PreAuthShare < 0 || l.PreAuthShare > 100 {
		return fmt.Errorf("mtls: limits.preauth_share %d: want a percentage of max_connections, 1 to 100", l.PreAuthShare)
	}
	return nil
}

func (l *Limits) setDefaults() {
	if l.MaxConnections == 0 {
		l.MaxConnections = 10000
	}
	if l.MaxConnectionsPerIP == 0 {
		l.MaxConnectionsPerIP = 50
	}
	if l.HandshakesPerIPPerMinute == 0 {
		l.HandshakesPerIPPerMinute = 120
	}
	if l.PreAuthShare == 0 {
		l.PreAuthShare = 50
	}
	if l.MaxPlainCommands == 0 {
		l.MaxPlainCommands = 10
	}
}

// maxPreAuth is how many connections may be open before login at once.
func (l *Limits) maxPreAuth() int64 {
	return max(1, int64(l.MaxConnections)*int64(l.PreAuthShare)/100)
}

// shards spread per-address state over many small locks so that no single mutex sits on
// every connection's path.
const shards = 64

var seed = maphash.MakeSeed()

func shardOf(key string) int { return int(maphash.String(seed, key) % shards) }

// connLimiter counts open connections and recent handshakes per address.
type connLimiter struct {
	total   atomic.Int64
	preauth atomic.Int64 // connections not logged in (yet), see enterPreAuth
	accepts atomic.Int64
	shards  [shards]struct {
		mu sync.Mutex
		m  map[netip.Addr]*ipState
	}
}

type ipState struct {
	open   int
	tokens float64
	last   time.Time
}

func newConnLimiter() *connLimiter {
	l := &connLimiter{}
	for i := range l.shards {
		l.shards[i].m = map[netip.Addr]*ipState{}
	}
	return l
}

// acquire admits a new connection from ip, or says why not. release must be called
// when the connection ends.
func (l *connLimiter) acquire(ip netip.Addr, lim *Limits, now time.Time) (release func(), why string) {
	ip = groupAddr(ip) // an IPv6 /64 counts as one address
	if n := l.total.Add(1); n > int64(lim.MaxConnections) {
		l.total.Add(-1)
		return nil, fmt.Sprintf("server is at max_connections (%d)", lim.MaxConnections)
	}
	sh := &l.shards[shardOf(string(ip.AsSlice()))]
	sh.mu.Lock()
	if l.accepts.Add(1)%1024 == 0 {
		l.sweep(sh, lim, now)
	}
	st := sh.m[ip]
	if st == nil {
		st = &ipState{tokens: float64(lim.HandshakesPerIPPerMinute), last: now}
		sh.m[ip] = st
	}
	if st.open >= lim.MaxConnectionsPerIP {
		sh.mu.Unlock()
		l.total.Add(-1)
		return nil, fmt.Sprintf("address has max_connections_per_ip (%d) open", lim.MaxConnectionsPerIP)
	}
	st.open++
	sh.mu.Unlock()
	return func() {
		l.total.Add(-1)
		sh.mu.Lock()
		st.open--
		if st.open == 0 && st.tokens >= float64(lim.HandshakesPerIPPerMinute) {
			delete(sh.m, ip)
		}
		sh.mu.Unlock()
	}, ""
}

// sweep drops idle addresses whose handshake bucket has refilled by now, so that a scan
// from many addresses does not grow the map for ever. The caller holds sh.mu; sweeping
// one shard per 1024 accepts spreads the work.
func (l *connLimiter) sweep(sh *struct {
	mu sync.Mutex
	m  map[netip.Addr]*ipState
}, lim *Limits, now time.Time) {
	rate := float64(lim.HandshakesPerIPPerMinute)
	for ip, st := range sh.m {
		if st.open == 0 && st.tokens+now.Sub(st.last).Minutes()*rate >= rate {
			delete(sh.m, ip)
		}
	}
}

// handshakeAllowed takes one token from ip's handshake bucket. The entry exists while
// the connection is open (acquire made it).
func (l *connLimiter) handshakeAllowed(ip netip.Addr, lim *Limits, now time.Time) bool {
	ip = groupAddr(ip) // an IPv6 /64 counts as one address
	sh := &l.shards[shardOf(string(ip.AsSlice()))]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := sh.m[ip]
	if st == nil {
		return true
	}
	rate := float64(lim.HandshakesPerIPPerMinute)
	st.tokens = min(rate, st.tokens+now.Sub(st.last).Minutes()*rate)
	st.last = now
	if st.tokens < 1 {
		return false
	}
	st.tokens--
	return true
}

// enterPreAuth admits one more connection that has not logged in, or says why not:
// together they hold at most limits.preauth_share of max_connections. leavePreAuth
// gives the place back, at login or at the end of the connection.
func (l *connLimiter) enterPreAuth(lim *Limits) string {
	if l.preauth.Add(1) > lim.maxPreAuth() {
		l.preauth.Add(-1)
		return fmt.Sprintf("connections not logged in hold their share of max_connections (limits.preauth_share %d%% of %d); the rest is kept for logged-in sessions", lim.PreAuthShare, lim.MaxConnections)
	}
	return ""
}

func (l *connLimiter) leavePreAuth() { l.preauth.Add(-1) }
