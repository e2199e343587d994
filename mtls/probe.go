package mtls

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"
)

// backendProbe is what one look at a configured backend found, before any user meets
// it: at start (logged) and in --check (printed).
type backendProbe struct {
	proto, addr string
	problems    []probeProblem // none: the backend looks right
}

// probeProblem is one thing to fix: msg is the log line's message, reason says what
// to do.
type probeProblem struct{ msg, reason string }

const (
	probeUnreachable = "backend not reachable at start"
	probeFailed      = "backend check at start failed"
)

func failed(err error) []probeProblem { return []probeProblem{{probeFailed, err.Error()}} }

// probeBackends looks at every configured backend once: it connects, reads the
// greeting and brings up TLS as configured (the backend's certificate verified), and
// for SMTP asks EHLO for what the gate needs (AUTH PLAIN, XCLIENT). Nothing is logged
// in; an unreachable backend is a problem to report, never a reason not to start.
func probeBackends(ctx context.Context, o *Options) []backendProbe {
	out := []backendProbe{probeOne(ctx, "imap", &o.Backend, func(ctx context.Context, raw net.Conn, bo *BackendOptions) []probeProblem {
		if _, _, err := backendGreeting(ctx, raw, bo); err != nil {
			return failed(err)
		}
		return nil
	})}
	if o.POP3.Backend.Address != "" {
		out = append(out, probeOne(ctx, "pop3", &o.POP3.Backend, func(ctx context.Context, raw net.Conn, bo *BackendOptions) []probeProblem {
			c, _, err := pop3Greeting(ctx, raw, bo)
			if err != nil {
				return failed(err)
			}
			io.WriteString(c, "QUIT\r\n")
			return nil
		}))
	}
	if o.SMTP.Backend.Address != "" {
		out = append(out, probeOne(ctx, "smtp", &o.SMTP.Backend, func(ctx context.Context, raw net.Conn, bo *BackendOptions) []probeProblem {
			c, _, caps, err := smtpGreeting(ctx, raw, bo, o.SMTP.Hostname)
			if err != nil {
				return failed(err)
			}
			defer io.WriteString(c, "QUIT\r\n")
			var p []probeProblem
			if !smtpHasAuthPlain(caps) {
				p = append(p, probeProblem{probeFailed, "the submission server offers the gate no AUTH PLAIN: enable SASL (smtpd_sasl_auth_enable) on it, and allow it without TLS from the gate or set smtp.backend.tls"})
			}
			if !smtpHasCap(caps, "XCLIENT") {
				p = append(p, probeProblem{"backend does not offer XCLIENT; client address not forwarded", "add the gate's address to Postfix's smtpd_authorized_xclient_hosts"})
			}
			return p
		}))
	}
	return out
}

func probeOne(ctx context.Context, proto string, bo *BackendOptions, look func(context.Context, net.Conn, *BackendOptions) []probeProblem) backendProbe {
	p := backendProbe{proto: proto, addr: bo.Address}
	dctx, cancel := context.WithTimeout(ctx, bo.DialTimeout)
	defer cancel()
	d := net.Dialer{Timeout: bo.DialTimeout}
	raw, err := d.DialContext(dctx, "tcp", bo.Address)
	if err != nil {
		p.problems = []probeProblem{{probeUnreachable, err.Error()}}
		return p
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(bo.DialTimeout))
	p.problems = look(dctx, raw, bo)
	return p
}

// logBackendProbes is the start's look at the backends: a warning per problem.
func logBackendProbes(ctx context.Context, o *Options, log *slog.Logger) {
	for _, p := range probeBackends(ctx, o) {
		for _, pr := range p.problems {
			log.Warn(pr.msg, "event", "start", "protocol", p.proto, "backend", p.addr, "reason", pr.reason)
		}
	}
}

// printBackendProbes is --check's: one line per backend.
func printBackendProbes(ctx context.Context, o *Options, w io.Writer) {
	for _, p := range probeBackends(ctx, o) {
		if len(p.problems) == 0 {
			tls := "plain TCP"
			if bo := o.backendOf(p.proto); bo.TLS != BackendPlain && bo.TLS != "" {
				tls = "TLS " + string(bo.TLS) + ", certificate verified"
			}
			fmt.Fprintf(w, "backend %s %s: reachable, greeting read (%s)\n", p.proto, p.addr, tls)
			continue
		}
		for _, pr := range p.problems {
			fmt.Fprintf(w, "warning: backend %s %s: %s: %s\n", p.proto, p.addr, strings.TrimPrefix(pr.msg, "backend "), pr.reason)
		}
	}
}

// backendOf is the backend options of a protocol's gate.
func (o *Options) backendOf(proto string) *BackendOptions {
	switch proto {
	case "pop3":
		return &o.POP3.Backend
	case "smtp":
		return &o.SMTP.Backend
	}
	return &o.Backend
}
