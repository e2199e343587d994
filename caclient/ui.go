package caclient

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The audit API of the CA (the contract between the CA and its clients).
// This file holds the client side the enrollment UI needs until the CA's
// own caclient additions land; the names and JSON are the agreed ones.
const (
	PathAudit = "/api/v1/audit"
)

// AuditEntry is one record of the CA's audit trail.
type AuditEntry struct {
	Time        time.Time `json:"time"`
	Actor       string    `json:"actor"`
	Role        string    `json:"role"`
	Action      string    `json:"action"`
	Serial      string    `json:"serial"`
	User        string    `json:"user"`
	TokenSerial string    `json:"token_serial"`
	Result      string    `json:"result"`
	Reason      string    `json:"reason"`
}

// AuditQuery selects audit entries; empty fields match all.
type AuditQuery struct {
	Serial string
	User   string
	Limit  int
}

// Audit returns the CA's audit entries matching q (an enrollment agent sees
// entries about user certificates only).
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

// RecordAudit records a help desk action (PIN change, unblock, enrollment
// steps) in the CA's audit trail; the CA sets Actor and Time from the
// requester.
func (c *Client) RecordAudit(ctx context.Context, e AuditEntry) error {
	body := map[string]string{"action": e.Action, "user": e.User, "serial": e.Serial,
		"token_serial": e.TokenSerial, "result": e.Result, "reason": e.Reason}
	if err := c.do(ctx, http.MethodPost, PathAudit, body, nil); err != nil {
		return fmt.Errorf("caclient: record audit %s: %w", e.Action, err)
	}
	return nil
}
