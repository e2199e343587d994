//go:build linux

package mtls

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// An idle proxied session spends nearly all its life waiting for the backend to say
// something (IDLE's "* 3 EXISTS"). A goroutine blocked in Read for that costs its
// stack and its copy buffer per session, thousands of times over. Instead the
// backend's socket of a plain-TCP backend is registered, one-shot, with one epoll
// instance for the whole process; when it becomes readable a short-lived pump
// goroutine takes a pooled buffer, copies what is there to the client, gives the
// buffer back and re-arms the registration. The client's side keeps its one
// goroutine (the session's own): crypto/tls must do the reading there.
//
// Registrations carry a token, not the fd: an fd closed by a kill and reused by
// another connection can never wake the wrong session.

// idleEvents is what a pump waits for: data, the backend's end, or an error.
const idleEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

type idlePoller struct {
	epfd  int
	mu    sync.Mutex
	next  uint32
	pumps map[uint32]*downPump
}

var (
	idleOnce sync.Once
	idleP    *idlePoller
)

// poller is the process's idle poller, or nil if epoll is not available (the
// splice then uses a goroutine per direction).
func poller() *idlePoller {
	idleOnce.Do(func() {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return
		}
		idleP = &idlePoller{epfd: fd, pumps: map[uint32]*downPump{}}
		go idleP.loop()
	})
	return idleP
}

func (p *idlePoller) loop() {
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			// Never seen; but a loop that cannot wait must not spin a core.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for _, ev := range events[:n] {
			p.mu.Lock()
			d := p.pumps[uint32(ev.Fd)]
			p.mu.Unlock()
			if d != nil {
				d.wake()
			}
		}
	}
}

// pump states
const (
	pumpArmed   = iota // registered, no goroutine
	pumpRunning        // a goroutine copies
	pumpEnded
)

// downPump copies one session's backend→client stream without a goroutine while
// the backend is quiet.
type downPump struct {
	s     *session
	p     *idlePoller
	rc    syscall.RawConn
	token uint32

	mu    sync.Mutex
	state int
	out   atomic.Int64
	once  sync.Once
	done  chan struct{}
}

// startDownPump starts relaying b (a plain TCP connection) to the session's client,
// pending first. It returns false if b cannot be waited for this way.
func (s *session) startDownPump(b net.Conn, pending []byte) (*downPump, bool) {
	tcp, ok := b.(*net.TCPConn)
	p := poller()
	if !ok || p == nil {
		return nil, false
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return nil, false
	}
	d := &downPump{s: s, p: p, rc: rc, state: pumpRunning, done: make(chan struct{})}
	p.mu.Lock()
	for {
		p.next++
		if _, taken := p.pumps[p.next]; !taken {
			break
		}
	}
	d.token = p.next
	p.pumps[d.token] = d
	p.mu.Unlock()
	go d.run(pending, true)
	return d, true
}

// wake is the poller's: the backend has something.
func (d *downPump) wake() {
	d.mu.Lock()
	if d.state != pumpArmed {
		d.mu.Unlock()
		return
	}
	d.state = pumpRunning
	d.mu.Unlock()
	go d.run(nil, false)
}

// run writes pending, then copies until the backend has nothing more for now, and
// re-arms; at the backend's end or an error it ends the session.
func (d *downPump) run(pending []byte, first bool) {
	if len(pending) > 0 {
		if d.s.writeBytes(pending) != nil {
			d.end(true)
			return
		}
		d.out.Add(int64(len(pending)))
	}
	bufp := spliceBufs.Get().(*[]byte)
	buf := *bufp
	for {
		var k int
		var rerr error
		err := d.rc.Read(func(fd uintptr) bool {
			k, rerr = syscall.Read(int(fd), buf)
			return true // never let the runtime wait: that is the poller's job
		})
		switch {
		case err != nil: // closed under us (kill, the client's side ended)
		case rerr == syscall.EAGAIN:
			spliceBufs.Put(bufp)
			d.arm(first)
			return
		case rerr == syscall.EINTR:
			continue
		case rerr == nil && k > 0:
			if d.s.writeBytes(buf[:k]) != nil {
				break
			}
			d.out.Add(int64(k))
			continue
		}
		// EOF (k == 0), an error, or a failed write: the session is over.
		spliceBufs.Put(bufp)
		d.end(true)
		return
	}
}

// arm registers (first) or re-arms the one-shot wait. It returns false if the pump
// is to stop: the session ended meanwhile, or the registration failed (the session
// is then ended: a backend stream nobody waits for must not look alive).
func (d *downPump) arm(first bool) bool {
	d.mu.Lock()
	if d.state == pumpEnded {
		d.mu.Unlock()
		d.end(false)
		return false
	}
	// Armed before the registration: an event right after it must find the pump
	// armed, or the wake-up would be lost.
	d.state = pumpArmed
	d.mu.Unlock()
	op := syscall.EPOLL_CTL_MOD
	if first {
		op = syscall.EPOLL_CTL_ADD
	}
	ev := syscall.EpollEvent{Events: idleEvents, Fd: int32(d.token)}
	var cerr error
	if err := d.rc.Control(func(fd uintptr) { cerr = syscall.EpollCtl(d.p.epfd, op, int(fd), &ev) }); err == nil && cerr == nil {
		return true
	}
	// No registration, so no wake can come; but cancel may have finished the pump
	// meanwhile, and then there is nothing left to do here.
	d.mu.Lock()
	mine := d.state == pumpArmed
	d.mu.Unlock()
	if mine {
		d.end(true)
	}
	return false
}

// end marks the pump ended and forgets it; endSession ends the whole session (the
// backend's end or a failed write to the client).
func (d *downPump) end(endSession bool) {
	d.mu.Lock()
	d.state = pumpEnded
	d.mu.Unlock()
	d.forget()
	if endSession {
		d.s.endTLS()
	}
	d.once.Do(func() { close(d.done) })
}

func (d *downPump) forget() {
	d.p.mu.Lock()
	delete(d.p.pumps, d.token)
	d.p.mu.Unlock()
	// Deregister while the fd is certainly still this connection's (Control holds a
	// reference); once it is closed the kernel has dropped the registration anyway.
	d.rc.Control(func(fd uintptr) { syscall.EpollCtl(d.p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil) })
}

// cancel is the client side's: the session is ending. A running pump notices when
// the connections close; an armed one has no goroutine, so it is finished here.
func (d *downPump) cancel() {
	d.mu.Lock()
	was := d.state
	d.state = pumpEnded
	d.mu.Unlock()
	if was == pumpArmed {
		d.forget()
		d.once.Do(func() { close(d.done) })
	}
}

// wait returns the bytes copied to the client once the pump has stopped.
func (d *downPump) wait() int64 {
	<-d.done
	return d.out.Load()
}
