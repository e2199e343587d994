package loadgen

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"time"
)

// IdleResult is the memory the server holds for sessions in IDLE: the PSS of its
// processes (all mappings: heap, stacks, buffers, libraries' share) before and after.
type IdleResult struct {
	Sessions      int     `json:"sessions"`
	PIDs          []int   `json:"pids"`
	PSSBeforeKiB  int     `json:"pss_before_kib"`
	PSSAfterKiB   int     `json:"pss_after_kib"`
	KiBPerSession float64 `json:"kib_per_session"`
	OpenS         float64 `json:"open_s"` // time to open and log in all sessions
}

func runIdle(ctx context.Context, c Config, cfg *tls.Config, res *Result) error {
	pids, err := c.pids()
	if err != nil {
		return err
	}
	before, err := pss(pids)
	if err != nil {
		return err
	}
	conns := make([]*tls.Conn, 0, c.Sessions)
	var mu sync.Mutex
	kinds := map[string]int{}
	sem := make(chan struct{}, c.Concurrency)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := 0; i < c.Sessions && ctx.Err() == nil; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			tc, err := c.idleSession(ctx, cfg)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Errors++
				kinds[errKind(err)]++
				return
			}
			conns = append(conns, tc)
		}()
	}
	wg.Wait()
	open := time.Since(t0)
	defer func() {
		for _, tc := range conns {
			tc.Close()
		}
	}()
	select {
	case <-time.After(c.Hold):
	case <-ctx.Done():
		return ctx.Err()
	}
	if c.Children { // workers may have been started for the sessions
		if pids, err = c.pids(); err != nil {
			return err
		}
	}
	after, err := pss(pids)
	if err != nil {
		return err
	}
	res.Ops = len(conns)
	if len(kinds) > 0 {
		res.ErrorKinds = kinds
	}
	ir := &IdleResult{Sessions: len(conns), PIDs: pids, PSSBeforeKiB: before, PSSAfterKiB: after, OpenS: open.Seconds()}
	if len(conns) > 0 {
		ir.KiBPerSession = float64(after-before) / float64(len(conns))
	}
	res.Idle = ir
	return nil
}

// idleSession logs in, selects INBOX and enters IDLE; the connection stays open.
func (c *Config) idleSession(ctx context.Context, cfg *tls.Config) (*tls.Conn, error) {
	tc, br, err := c.connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(tc, "a LOGIN %s %s\r\n", quote(c.User), quote(c.Password))
	if err := tagged(br, "a "); err != nil {
		tc.Close()
		return nil, fmt.Errorf("LOGIN: %w", err)
	}
	fmt.Fprintf(tc, "b SELECT INBOX\r\n")
	if err := tagged(br, "b "); err != nil {
		tc.Close()
		return nil, fmt.Errorf("SELECT: %w", err)
	}
	fmt.Fprintf(tc, "c IDLE\r\n")
	if err := continuation(br); err != nil {
		tc.Close()
		return nil, fmt.Errorf("IDLE: %w", err)
	}
	tc.NetConn().SetDeadline(time.Time{})
	return tc, nil
}

func continuation(br *bufio.Reader) error {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.HasPrefix(line, "+") {
			return nil
		}
		if strings.HasPrefix(line, "c ") {
			return fmt.Errorf("%q", trim(line))
		}
	}
}
