package mtls

import (
	"bufio"
	"log/slog"
	"net"
	"sync"
	"time"
)

// proxied is a logged-in session waiting to be spliced.
type proxied struct {
	backend net.Conn
	br      *bufio.Reader
	log     *slog.Logger
}

// relay splices a logged-in session until either side ends.
func (s *session) relay(p *proxied) {
	// Take the fields apart: p must not keep the backend reader's 4 KiB buffer alive
	// for the whole session (splice drains it first and then drops it).
	b, br, log := p.backend, p.br, p.log
	start := time.Now()
	in, out := s.splice(b, br)
	log.Info("session ended", "event", "logout", "result", "ok", "duration", time.Since(start).Round(time.Millisecond).String(), "bytes_in", in, "bytes_out", out)
}

// The copy buffers. A busy direction copies through a pooled 16 KiB buffer (one TLS
// record); an idle one holds none: the backend's side waits in the idle poller
// (idlewait_linux.go) and the client's side waits with a 1 KiB buffer, enough for
// the commands of a mail client, and takes a pooled one only while a read fills it
// (an APPEND).
const (
	spliceBuf = 16 << 10
	upIdleBuf = 1 << 10
)

var spliceBufs = sync.Pool{New: func() any { b := make([]byte, spliceBuf); return &b }}

// splice copies bytes both ways until either side ends, then closes both. Bytes already
// buffered on either side (pipelined commands, backend lines after the OK) go first.
func (s *session) splice(b net.Conn, bbr *bufio.Reader) (in, out int64) {
	cpending, _ := s.br.Peek(s.br.Buffered())
	cpending = append([]byte(nil), cpending...)
	bpending, _ := bbr.Peek(bbr.Buffered())
	bpending = append([]byte(nil), bpending...)
	s.br, s.wr = nil, nil // the pre-auth reader is not used again

	down := s.relayDown(b, bpending)
	if len(cpending) > 0 {
		if _, err := b.Write(cpending); err == nil {
			in += int64(len(cpending))
		}
	}
	small := make([]byte, upIdleBuf)
	buf := small
	var big *[]byte
	for {
		k, err := s.conn.Read(buf)
		if k > 0 {
			if _, werr := b.Write(buf[:k]); werr != nil {
				break
			}
			in += int64(k)
		}
		if err != nil {
			break
		}
		switch {
		case k == len(buf) && big == nil: // more is coming: read it in records
			big = spliceBufs.Get().(*[]byte)
			buf = *big
		case k < len(buf) && big != nil: // back to waiting
			spliceBufs.Put(big)
			big, buf = nil, small
		}
	}
	if big != nil {
		spliceBufs.Put(big)
	}
	down.cancel()
	s.endTLS()
	out = down.wait()
	return in, out
}

// downRelay is the backend→client direction of a splice.
type downRelay interface {
	cancel()     // the client's side ended
	wait() int64 // bytes copied, once stopped
}

// relayDown starts copying the backend's stream to the client: in the idle poller
// for a plain TCP backend, else (a TLS backend, whose bytes crypto/tls buffers; a
// system without epoll) in a goroutine of its own.
func (s *session) relayDown(b net.Conn, pending []byte) downRelay {
	if d, ok := s.startDownPump(b, pending); ok {
		return d
	}
	g := downGoroutine(make(chan int64, 1))
	go func() {
		var n int64
		defer func() { s.endTLS(); g <- n }()
		if len(pending) > 0 {
			if s.writeBytes(pending) != nil {
				return
			}
			n += int64(len(pending))
		}
		// Its own small buffer: this goroutine blocks in Read for the whole session,
		// so a pooled record-sized one would stay taken.
		buf := make([]byte, 4096)
		for {
			k, err := b.Read(buf)
			if k > 0 {
				if s.writeBytes(buf[:k]) != nil {
					return
				}
				n += int64(k)
			}
			if err != nil {
				return
			}
		}
	}()
	return g
}

type downGoroutine chan int64

func (downGoroutine) cancel()       {}
func (g downGoroutine) wait() int64 { return <-g }

func (s *session) writeBytes(p []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.killed.Load() {
		return net.ErrClosed
	}
	_, err := s.conn.Write(p)
	return err
}
