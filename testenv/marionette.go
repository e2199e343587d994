package testenv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// Marionette is a minimal client of Gecko's Marionette remote protocol (what
// geckodriver speaks to Firefox and Thunderbird): a TCP stream of packets
// "LEN:JSON", LEN the byte length of JSON in decimal. The server first sends a
// hello object; then each command is [0, id, name, params] and its response
// [1, id, error, result], error null or {"error", "message", "stacktrace"}.
// Calls are sequential (one in flight), which is all the tests need.
type Marionette struct {
	conn net.Conn
	r    *bufio.Reader

	mu sync.Mutex
	id int
}

// MarionetteError is an error a command returned (a WebDriver error code such
// as "javascript error" or "script timeout", with the server's message).
type MarionetteError struct {
	Command    string
	Code       string `json:"error"`
	Message    string `json:"message"`
	Stacktrace string `json:"stacktrace"`
}

func (e *MarionetteError) Error() string {
	return fmt.Sprintf("marionette: %s: %s: %s", e.Command, e.Code, e.Message)
}

// maxMarionettePacket bounds one packet (a script's result): a broken length
// must not make the test allocate gigabytes.
const maxMarionettePacket = 64 << 20

// DialMarionette connects to a Marionette server at addr and reads its hello.
func DialMarionette(ctx context.Context, addr string) (*Marionette, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("marionette: dial %s: %w", addr, err)
	}
	m := &Marionette{conn: conn, r: bufio.NewReader(conn)}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	var hello struct {
		ApplicationType string `json:"applicationType"`
		Protocol        int    `json:"marionetteProtocol"`
	}
	pkt, err := m.readPacket()
	if err == nil {
		err = json.Unmarshal(pkt, &hello)
	}
	conn.SetDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("marionette: hello from %s: %w", addr, err)
	}
	if hello.Protocol < 3 {
		conn.Close()
		return nil, fmt.Errorf("marionette: %s speaks protocol %d (%s), want 3 or later", addr, hello.Protocol, hello.ApplicationType)
	}
	return m, nil
}

// Close closes the connection (the session stays with the browser, which the
// caller ends by ending the process).
func (m *Marionette) Close() error { return m.conn.Close() }

func (m *Marionette) readPacket() ([]byte, error) {
	head, err := m.r.ReadSlice(':') // at most the reader's buffer, 4 KiB
	if err != nil {
		return nil, fmt.Errorf("packet length: %w", err)
	}
	n, err := strconv.Atoi(string(head[:len(head)-1]))
	if err != nil || n < 0 || n > maxMarionettePacket {
		return nil, fmt.Errorf("bad packet length %.20q", head)
	}
	// Grows with what arrives: a length alone allocates nothing.
	var buf bytes.Buffer
	if _, err := io.CopyN(&buf, m.r, int64(n)); err != nil {
		return nil, fmt.Errorf("packet of %d bytes: %w", n, err)
	}
	return buf.Bytes(), nil
}

// Call sends command name with params and decodes its result into result
// (nil: ignored). The context bounds the whole call.
func (m *Marionette) Call(ctx context.Context, name string, params, result any) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if params == nil {
		params = map[string]any{}
	}
	m.id++
	id := m.id
	body, err := json.Marshal([]any{0, id, name, params})
	if err != nil {
		return fmt.Errorf("marionette: %s: %w", name, err)
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(5 * time.Minute)
	}
	m.conn.SetDeadline(dl)
	defer m.conn.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { m.conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := fmt.Fprintf(m.conn, "%d:%s", len(body), body); err != nil {
		return fmt.Errorf("marionette: send %s: %w", name, err)
	}
	for {
		pkt, err := m.readPacket()
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return fmt.Errorf("marionette: %s: read response: %w", name, err)
		}
		var msg []json.RawMessage
		if err := json.Unmarshal(pkt, &msg); err != nil || len(msg) != 4 {
			return fmt.Errorf("marionette: %s: malformed response %.200q", name, pkt)
		}
		var typ, rid int
		if json.Unmarshal(msg[0], &typ) != nil || json.Unmarshal(msg[1], &rid) != nil || typ != 1 {
			return fmt.Errorf("marionette: %s: unexpected message %.200q", name, pkt)
		}
		if rid != id {
			continue // a late answer to an abandoned call
		}
		if string(msg[2]) != "null" {
			me := &MarionetteError{Command: name}
			if err := json.Unmarshal(msg[2], me); err != nil {
				return fmt.Errorf("marionette: %s: malformed error %.200q", name, msg[2])
			}
			return me
		}
		if result == nil {
			return nil
		}
		if err := json.Unmarshal(msg[3], result); err != nil {
			return fmt.Errorf("marionette: %s: decode result: %w", name, err)
		}
		return nil
	}
}

// NewSession opens a WebDriver session with the given capabilities (Marionette
// takes them as the command's parameters, not W3C's alwaysMatch form) and
// returns the capabilities the session has.
func (m *Marionette) NewSession(ctx context.Context, caps map[string]any) (map[string]any, error) {
	var r struct {
		Capabilities map[string]any `json:"capabilities"`
	}
	if err := m.Call(ctx, "WebDriver:NewSession", caps, &r); err != nil {
		return nil, err
	}
	return r.Capabilities, nil
}

// SetContext selects "chrome" (the application's privileged JavaScript) or
// "content" for the scripts that follow.
func (m *Marionette) SetContext(ctx context.Context, value string) error {
	return m.Call(ctx, "Marionette:SetContext", map[string]any{"value": value}, nil)
}

// ExecuteAsync runs script as an async WebDriver script: it gets args as
// arguments[0..], and its last argument is the callback that ends it with a
// value, which is decoded into result. The script's own timeout is the time
// left on ctx (it must be set: a script that never calls back would hang).
func (m *Marionette) ExecuteAsync(ctx context.Context, script string, args []any, result any) error {
	dl, ok := ctx.Deadline()
	if !ok {
		return errors.New("marionette: ExecuteAsync needs a context with a deadline")
	}
	left := time.Until(dl).Milliseconds()
	if left <= 0 {
		return fmt.Errorf("marionette: execute: %w", context.DeadlineExceeded)
	}
	if err := m.Call(ctx, "WebDriver:SetTimeouts", map[string]any{"script": left}, nil); err != nil {
		return err
	}
	if args == nil {
		args = []any{}
	}
	var v struct {
		Value json.RawMessage `json:"value"`
	}
	if err := m.Call(ctx, "WebDriver:ExecuteAsyncScript", map[string]any{"script": script, "args": args}, &v); err != nil {
		return err
	}
	if result == nil {
		return nil
	}
	if err := json.Unmarshal(v.Value, result); err != nil {
		return fmt.Errorf("marionette: script result %.200q: %w", v.Value, err)
	}
	return nil
}
