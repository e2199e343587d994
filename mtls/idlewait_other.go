//go:build !linux

package mtls

import "net"

// downPump is Linux's epoll wait (idlewait_linux.go); elsewhere the splice keeps a
// goroutine per direction.
type downPump struct{}

func (s *session) startDownPump(net.Conn, []byte) (*downPump, bool) { return nil, false }
func (d *downPump) cancel()                                         {}
func (d *downPump) wait() int64                                     { return 0 }
