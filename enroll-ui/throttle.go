package enrollui

import (
	"context"
	"strings"
	"sync"
	"time"
	"unicode"
)

// Login failures slow the next answer down for the same operator name:
// loginDelayBase after the first, doubling up to loginDelayMax. It is a
// delay, never a lockout: the right password always logs in (after at most
// loginDelayMax), and one name's failures never slow another operator.
const (
	loginDelayBase = 250 * time.Millisecond
	loginDelayMax  = 8 * time.Second
	// maxTypedName is how much of a typed operator name reaches the audit log.
	maxTypedName = 64
)

// loginThrottle counts failures by operator name: the configured names and
// "" for every unknown one, so strangers cannot grow it.
type loginThrottle struct {
	mu    sync.Mutex
	fails map[string]int
	// sleep waits d or until ctx ends (tests replace it).
	sleep func(ctx context.Context, d time.Duration)
}

func newLoginThrottle() *loginThrottle {
	return &loginThrottle{fails: map[string]int{}, sleep: func(ctx context.Context, d time.Duration) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}}
}

// loginDelay is the wait after n failures in a row.
func loginDelay(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	d := loginDelayBase
	for i := 1; i < n && d < loginDelayMax; i++ {
		d *= 2
	}
	return min(d, loginDelayMax)
}

// failed records a failure for name and waits the growing delay before the
// failure is answered.
func (lt *loginThrottle) failed(ctx context.Context, name string) {
	lt.mu.Lock()
	lt.fails[name]++
	d := loginDelay(lt.fails[name])
	lt.mu.Unlock()
	lt.sleep(ctx, d)
}

// succeeded forgets name's failures.
func (lt *loginThrottle) succeeded(name string) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	delete(lt.fails, name)
}

// cleanTypedName is a typed operator name fit for the audit log: printable
// characters only, at most maxTypedName of them.
func cleanTypedName(s string) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == maxTypedName {
			b.WriteString("…")
			break
		}
		if !unicode.IsPrint(r) {
			r = '?'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}
