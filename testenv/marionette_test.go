package testenv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// fakeMarionette serves one connection: the hello, then for each command the
// packets reply(id, name, params) returns, written raw.
func fakeMarionette(t *testing.T, hello string, reply func(id int, name string, params json.RawMessage) []string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(c, "%d:%s", len(hello), hello)
		m := &Marionette{conn: c, r: bufio.NewReader(c)}
		for {
			pkt, err := m.readPacket()
			if err != nil {
				return
			}
			var msg []json.RawMessage
			var id int
			var name string
			if json.Unmarshal(pkt, &msg) != nil || len(msg) != 4 || json.Unmarshal(msg[1], &id) != nil || json.Unmarshal(msg[2], &name) != nil {
				return
			}
			for _, r := range reply(id, name, msg[3]) {
				fmt.Fprintf(c, "%d:%s", len(r), r)
			}
		}
	}()
	return ln.Addr().String()
}

const goodHello = `{"applicationType":"gecko","marionetteProtocol":3}`

func TestMarionetteCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := fakeMarionette(t, goodHello, func(id int, name string, params json.RawMessage) []string {
		switch name {
		case "WebDriver:NewSession":
			// A stale answer to an abandoned call comes first; it is skipped.
			return []string{fmt.Sprintf(`[1,%d,null,{"value":"stale"}]`, id-1),
				fmt.Sprintf(`[1,%d,null,{"sessionId":"s","capabilities":%s}]`, id, params)}
		case "WebDriver:SetTimeouts":
			return []string{fmt.Sprintf(`[1,%d,null,{}]`, id)}
		case "WebDriver:ExecuteAsyncScript":
			if strings.Contains(string(params), "throw") {
				return []string{fmt.Sprintf(`[1,%d,{"error":"javascript error","message":"boom","stacktrace":""},null]`, id)}
			}
			return []string{fmt.Sprintf(`[1,%d,null,{"value":{"echo":%s}}]`, id, params)}
		}
		return []string{fmt.Sprintf(`[1,%d,{"error":"unknown command","message":"%s"},null]`, id, name)}
	})
	m, err := DialMarionette(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	caps, err := m.NewSession(ctx, map[string]any{"unhandledPromptBehavior": "ignore"})
	if err != nil || caps["unhandledPromptBehavior"] != "ignore" {
		t.Fatalf("NewSession: %v, %v (capabilities must be sent flat)", caps, err)
	}
	var got struct {
		Echo struct {
			Script string `json:"script"`
			Args   []int  `json:"args"`
		} `json:"echo"`
	}
	if err := m.ExecuteAsync(ctx, "done(1)", []any{7}, &got); err != nil || got.Echo.Script != "done(1)" || len(got.Echo.Args) != 1 || got.Echo.Args[0] != 7 {
		t.Fatalf("ExecuteAsync: %+v, %v", got, err)
	}
	err = m.ExecuteAsync(ctx, "throw 1", nil, nil)
	var me *MarionetteError
	if !errors.As(err, &me) || me.Code != "javascript error" || me.Message != "boom" {
		t.Fatalf("a script error: %v", err)
	}
	if err := m.SetContext(ctx, "chrome"); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("an unknown command: %v", err)
	}
	if err := m.ExecuteAsync(context.Background(), "x", nil, nil); err == nil {
		t.Fatal("ExecuteAsync without a deadline ran")
	}
}

func TestMarionetteBadServer(t *testing.T) {
	for _, c := range []struct{ name, hello, want string }{
		{"old_protocol", `{"applicationType":"gecko","marionetteProtocol":2}`, "speaks protocol 2"},
		{"not_json", `hello`, "hello from"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			addr := fakeMarionette(t, c.hello, func(int, string, json.RawMessage) []string { return nil })
			if _, err := DialMarionette(ctx, addr); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("dial: %v, want %q", err, c.want)
			}
		})
	}
}

// FuzzMarionettePacket: readPacket takes any bytes without panicking, and
// what it returns is exactly the announced length.
func FuzzMarionettePacket(f *testing.F) {
	for _, s := range []string{"2:{}", "0:", "5:[1,2]", "-1:", "99999999999:", "3:ab", "x:y", strings.Repeat("9", 5000) + ":"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m := &Marionette{r: bufio.NewReader(bytes.NewReader(data))}
		for {
			pkt, err := m.readPacket()
			if err != nil {
				return
			}
			if len(pkt) > maxMarionettePacket || len(pkt) > len(data) {
				t.Fatalf("packet of %d bytes from %d bytes of input", len(pkt), len(data))
			}
		}
	})
}
