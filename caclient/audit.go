package caclient

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// AuditEntry is one line of the CA's audit trail.
type AuditEntry struct {
	Time time.Time `json:"time"`
	// Actor is the requester's certificate subject; ActorSerial its serial.
	Actor       string `json:"actor"`
	ActorSerial string `json:"actor_serial,omitempty"`
	Role        string `json:"role,omitempty"`
	RemoteAddr  string `json:"remote_addr,omitempty"`
	// Action: issue, issue-role, issue-server, issue-ca-tls, revoke, …, or
	// a help desk's own (pin-change, unblock, wipe, …).
	Action string `json:"action"`
	// Kind of certificate concerned: user, role, server, ca-tls.
	Kind        string `json:"kind,omitempty"`
	Serial      string `json:"serial,omitempty"`
	User        string `json:"user,omitempty"`
	TokenSerial string `json:"token_serial,omitempty"`
	// Result: ok, refused, failed, or pending (the CA stopped in between).
	Result string `json:"result"`
	Reason string `json:"reason,omitempty"`
	// Reported: recorded by a client through RecordAudit.
	Reported bool `json:"reported,omitempty"`
}

// AuditQuery selects audit entries; empty fields match all.
type AuditQuery struct {
	Serial string
	User   string
	// Limit is the most entries returned, newest first (0: the CA's 100; at most 1000).
	Limit int
}

// Audit lists the CA's audit trail, newest first. An admin sees every
// entry; an enrollment agent the entries about user certificates.
func (c *Client) Audit(ctx context.Context, q AuditQuery) ([]AuditEntry, error) {
	v := url.Values{}
	if q.Serial != "" {
		v.Set("serial", q.Serial)
	}
	if q.User != "" {
		v.Set("user", q.User)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	p := PathAudit
	if len(v) > 0 {
		p += "?" + v.Encode()
	}
	var out struct {
		Entries []AuditEntry `json:"entries"`
	}
	if err := c.do(ctx, http.MethodGet, p, nil, &out); err != nil {
		return nil, fmt.Errorf("caclient: audit trail: %w", err)
	}
	return out.Entries, nil
}

// RecordAudit records a help desk's action (a PIN change, an unblock, a
// wipe, an enrollment step) in the CA's trail; the CA sets the time and the
// actor (this credential). Only Action, User, Serial, TokenSerial, Result
// (ok, failed, refused; empty: ok) and Reason are sent.
func (c *Client) RecordAudit(ctx context.Context, e AuditEntry) error {
	body := map[string]string{"action": e.Action, "user": e.User, "serial": e.Serial,
		"token_serial": e.TokenSerial, "result": e.Result, "reason": e.Reason}
	if err := c.do(ctx, http.MethodPost, PathAudit, body, nil); err != nil {
		return fmt.Errorf("caclient: record %s in the audit trail: %w", e.Action, err)
	}
	return nil
}
