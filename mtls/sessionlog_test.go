package mtls

import (
	"bytes"
	"context"
	"log/slog"
	"math/big"
	"net/netip"
	"testing"
)

// TestSessionLogLines: a session's lines, whose attributes sessionLog adds only when a
// line is written, read exactly as they did when the session's logger was built with
// Logger.With at accept and again after the handshake: the same keys, values and
// order (fail2ban filters and the docs' examples match them), for IMAP and POP3,
// before and after the certificate is known, and in loggers derived from it (the
// login's With, a group).
func TestSessionLogLines(t *testing.T) {
	noTime := func(groups []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey && len(groups) == 0 {
			return slog.Attr{}
		}
		return a
	}
	remote := netip.MustParseAddrPort("[::ffff:192.0.2.7]:40123")
	p := &peer{serial: big.NewInt(0x1f2), names: &certNames{serial: "01F2", subject: "CN=alice@example.org"}}
	for _, tc := range []struct {
		name   string
		proto  protocol
		peer   *peer
		derive func(*slog.Logger) *slog.Logger
	}{
		{"imap before the handshake", imap{}, nil, nil},
		{"imap after it", imap{}, p, nil},
		{"pop3 before the handshake", pop3{}, nil, nil},
		{"pop3 after it", pop3{}, p, nil},
		{"login's logger", imap{}, p, func(l *slog.Logger) *slog.Logger { return l.With("user", "alice@example.org", "method", "LOGIN") }},
		{"a group", pop3{}, p, func(l *slog.Logger) *slog.Logger { return l.WithGroup("g").With("k", 1) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got, want bytes.Buffer
			h := func(b *bytes.Buffer) slog.Handler {
				return slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: noTime})
			}
			s := &session{id: "c2Vzc2lvbmlk", remote: remote, proto: tc.proto}
			s.lh = sessionLog{s: s, next: slog.New(h(&got)).With("component", "front").Handler()}
			s.log = slog.New(&s.lh)
			// What newSession and handshake built before.
			old := slog.New(h(&want)).With("component", "front").With("session", s.id, "remote_ip", remote.Addr().Unmap().String(), "remote_port", remote.Port())
			if n := tc.proto.name(); n != "imap" {
				old = old.With("protocol", n)
			}
			if tc.peer != nil {
				s.peer.Store(tc.peer)
				old = old.With("serial", tc.peer.serialHex(), "subject", tc.peer.subject())
			}
			gotLog := s.log
			if tc.derive != nil {
				gotLog, old = tc.derive(gotLog), tc.derive(old)
			}
			for _, l := range []*slog.Logger{gotLog, old} {
				l.Info("certificate refused", "event", "handshake", "result", "revoked", "reason", "listed")
				l.Debug("command", "event", "preauth", "command", "NOOP", "args", 0)
				l.LogAttrs(context.Background(), slog.LevelWarn, "many", slog.Int("a", 1), slog.Int("b", 2), slog.Int("c", 3), slog.Int("d", 4), slog.Int("e", 5), slog.Int("f", 6))
			}
			if got.String() != want.String() {
				t.Fatalf("lines differ:\ngot  %s\nwant %s", got.String(), want.String())
			}
		})
	}
}
