package mtls

import (
	"bufio"
	"log/slog"
	"net"
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

// spliceBuf is the copy buffer per direction. Small on purpose: an idle session holds two
// of them, and IMAP lines are short; large FETCHes just take more reads.
const spliceBuf = 4096

// splice copies bytes both ways until either side ends, then closes both. Bytes already
// buffered on either side (pipelined commands, backend lines after the OK) go first.
func (s *session) splice(b net.Conn, bbr *bufio.Reader) (in, out int64) {
	cpending, _ := s.br.Peek(s.br.Buffered())
	cpending = append([]byte(nil), cpending...)
	bpending, _ := bbr.Peek(bbr.Buffered())
	bpending = append([]byte(nil), bpending...)
	s.br, s.wr = nil, nil // the pre-auth reader is not used again

	downDone := make(chan int64, 1)
	go func() {
		var n int64
		defer func() { s.endTLS(); downDone <- n }()
		if len(bpending) > 0 {
			if s.writeBytes(bpending) != nil {
				return
			}
			n += int64(len(bpending))
		}
		buf := make([]byte, spliceBuf)
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
	if len(cpending) > 0 {
		if _, err := b.Write(cpending); err == nil {
			in += int64(len(cpending))
		}
	}
	buf := make([]byte, spliceBuf)
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
	}
	s.endTLS()
	out = <-downDone
	return in, out
}

func (s *session) writeBytes(p []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.killed.Load() {
		return net.ErrClosed
	}
	_, err := s.conn.Write(p)
	return err
}
