package loadgen

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Result is what a run reports (JSON on stdout of cmd/imapgate-load).
type Result struct {
	Label      string  `json:"label,omitempty"`
	Addr       string  `json:"addr"`
	Mode       Mode    `json:"mode"`
	Proto      Proto   `json:"proto"`
	TargetRate float64 `json:"target_rate,omitempty"` // --rate: operations started per second
	// Missed counts the operations --rate asked for that found all Concurrency workers
	// busy: the server (or this machine) could not keep the rate.
	Missed      int     `json:"missed,omitempty"`
	Curve       string  `json:"curve"`
	Concurrency int     `json:"concurrency"`
	DurationS   float64 `json:"duration_s"`
	Ops         int     `json:"ops"`
	OpsPerS     float64 `json:"ops_per_s"` // connections (full, resumed) or logins (login) per second
	Errors      int     `json:"errors"`
	PerSecond   []int   `json:"per_second,omitempty"` // operations finished in each second of the measured window
	// MeasuredFrom is when the first bucket of PerSecond starts (RFC 3339, UTC), to line
	// the buckets up with the server's log (a CRL reload's "crl loaded" line).
	MeasuredFrom string         `json:"measured_from,omitempty"`
	ErrorKinds   map[string]int `json:"error_kinds,omitempty"`
	Resumed      int            `json:"resumed"` // handshakes that resumed a session
	Greeting     Latency        `json:"greeting_ms"`
	Login        *Latency       `json:"login_ms,omitempty"` // login mode: connect to tagged OK of LOGIN
	Idle         *IdleResult    `json:"idle,omitempty"`
	// ServerCPUMsPerOp is the CPU time (user + system) the server processes (--pid,
	// with --children their child processes) used in the measured window, per
	// operation: unlike the rate, it does not depend on how much of a shared machine
	// the server got.
	ServerCPUMsPerOp float64 `json:"server_cpu_ms_per_op,omitempty"`
	ServerCPUS       float64 `json:"server_cpu_s,omitempty"`
}

// Latency are percentiles in milliseconds from the start of the TCP connect.
type Latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Run performs one run as c says.
func Run(ctx context.Context, c Config) (*Result, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	cfg, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	if c.Proto == "" {
		c.Proto = IMAP
	}
	res := &Result{Label: c.Label, Addr: c.Addr, Mode: c.Mode, Proto: c.Proto, Curve: c.Curve, Concurrency: c.Concurrency, TargetRate: c.Rate}
	if res.Curve == "" {
		res.Curve = "default"
	}
	if c.Mode == Idle {
		return res, runIdle(ctx, c, cfg, res)
	}

	var (
		mu        sync.Mutex
		greetings []time.Duration
		logins    []time.Duration
		perSecond = make([]int, int(c.Duration/time.Second)+1)
		kinds     = map[string]int{}
	)
	start := time.Now()
	measureFrom, end := start.Add(c.Warmup), start.Add(c.Warmup+c.Duration)
	cpu := make(chan float64, 1) // server CPU seconds in [measureFrom, end]
	if len(c.PIDs) > 0 {
		go func() {
			time.Sleep(time.Until(measureFrom))
			pids, _ := c.pids()
			c0 := cpuSeconds(pids)
			time.Sleep(time.Until(end))
			if c.Children { // Dovecot may have started processes meanwhile
				pids, _ = c.pids()
			}
			cpu <- cpuSeconds(pids) - c0
		}()
	}
	// With --rate a pacer hands out one ticket per operation; a ticket that finds
	// every worker busy is missed, not queued, so the rate stays the one asked for.
	var tickets chan struct{}
	var missed int
	pacerDone := make(chan struct{})
	if c.Rate > 0 {
		tickets = make(chan struct{})
		go func() {
			defer close(pacerDone)
			defer close(tickets)
			every := time.Duration(float64(time.Second) / c.Rate)
			for next := start; ctx.Err() == nil && next.Before(end); next = next.Add(every) {
				time.Sleep(time.Until(next))
				select {
				case tickets <- struct{}{}:
				default:
					if !next.Before(measureFrom) {
						missed++
					}
				}
			}
		}()
	} else {
		close(pacerDone)
	}
	var wg sync.WaitGroup
	for w := 0; w < c.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wcfg := cfg
			if c.Mode == Resumed {
				wcfg = cfg.Clone()
				wcfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			}
			var g, l []time.Duration
			ps := make([]int, len(perSecond))
			var ops, resumed, errs int
			wk := map[string]int{}
			for ctx.Err() == nil && time.Now().Before(end) {
				if tickets != nil {
					if _, ok := <-tickets; !ok {
						break
					}
				}
				t0 := time.Now()
				o, err := c.op(ctx, wcfg)
				t1 := time.Now()
				if t0.Before(measureFrom) || t1.After(end) {
					continue // warm-up, or ran past the end
				}
				if err != nil {
					errs++
					wk[errKind(err)]++
					time.Sleep(5 * time.Millisecond) // do not spin on a refusing server
					continue
				}
				ops++
				ps[int(t1.Sub(measureFrom)/time.Second)]++
				g = append(g, o.greeting)
				if c.Mode == Login {
					l = append(l, o.login)
				}
				if o.resumed {
					resumed++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			greetings = append(greetings, g...)
			logins = append(logins, l...)
			res.Ops += ops
			for i, n := range ps {
				perSecond[i] += n
			}
			res.Resumed += resumed
			res.Errors += errs
			for k, n := range wk {
				kinds[k] += n
			}
		}()
	}
	wg.Wait()
	<-pacerDone
	res.Missed = missed
	res.DurationS = c.Duration.Seconds()
	res.OpsPerS = float64(res.Ops) / c.Duration.Seconds()
	if len(c.PIDs) > 0 {
		res.ServerCPUS = <-cpu
		if res.Ops > 0 {
			res.ServerCPUMsPerOp = 1000 * res.ServerCPUS / float64(res.Ops)
		}
	}
	res.Greeting = percentiles(greetings)
	if whole := int(c.Duration / time.Second); whole >= 2 {
		res.PerSecond = perSecond[:whole] // a last partial second would read as a dip
		res.MeasuredFrom = measureFrom.UTC().Format(time.RFC3339Nano)
	}
	if c.Mode == Login {
		lat := percentiles(logins)
		res.Login = &lat
	}
	if len(kinds) > 0 {
		res.ErrorKinds = kinds
	}
	return res, ctx.Err()
}

// outcome is one operation's timings.
type outcome struct {
	greeting, login time.Duration
	resumed         bool
}

// op is one connection of mode full, resumed or login.
func (c *Config) op(ctx context.Context, cfg *tls.Config) (outcome, error) {
	var o outcome
	t0 := time.Now()
	tc, br, err := c.connect(ctx, cfg)
	if err != nil {
		return o, err
	}
	defer tc.Close()
	o.greeting = time.Since(t0)
	o.resumed = tc.ConnectionState().DidResume
	if c.Mode != Login {
		return o, nil
	}
	if err := c.Proto.login(tc, br, c.User, c.Password); err != nil {
		return o, err
	}
	o.login = time.Since(t0)
	return o, c.Proto.logout(tc, br)
}

// connect dials, handshakes and reads the greeting.
func (c *Config) connect(ctx context.Context, cfg *tls.Config) (*tls.Conn, *bufio.Reader, error) {
	d := net.Dialer{Timeout: 30 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", c.Addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dial: %w", err)
	}
	raw.SetDeadline(time.Now().Add(30 * time.Second))
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, nil, fmt.Errorf("handshake: %w", err)
	}
	br := bufio.NewReaderSize(tc, 1024)
	line, err := br.ReadString('\n')
	if err == nil && c.Proto == SMTP && len(line) >= 4 && line[3] == '-' {
		err = expect(br, "220", "greeting")
	}
	if err != nil || !c.Proto.greeted(line) {
		tc.Close()
		return nil, nil, fmt.Errorf("greeting %q: %v", trim(line), err)
	}
	return tc, br, nil
}

// tagged reads lines until the one with tag and fails unless it is OK.
func tagged(br *bufio.Reader, tag string) error {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.HasPrefix(line, "* BYE") && tag != "b " {
			return fmt.Errorf("%q", trim(line))
		}
		if strings.HasPrefix(line, tag) {
			if !strings.HasPrefix(line[len(tag):], "OK") {
				return fmt.Errorf("%q", trim(line))
			}
			return nil
		}
	}
}

// quote makes an IMAP quoted string.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func trim(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}

var portRE = regexp.MustCompile(`:\d+`)

// errKind groups errors that differ only in port numbers.
func errKind(err error) string {
	return trim(portRE.ReplaceAllString(err.Error(), ":N"))
}

func percentiles(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	at := func(p float64) float64 {
		i := int(p * float64(len(d)-1))
		return float64(d[i].Microseconds()) / 1000
	}
	return Latency{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: at(1)}
}
