package ca

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Results of an audited operation.
const (
	resultOK      = "ok"
	resultRefused = "refused"
	resultFailed  = "failed"
	// resultPending is written before an issuance or revocation and
	// replaced by its outcome; one left behind means the CA stopped (or
	// its database failed) in between: the certificate's status tells.
	resultPending = "pending"
)

// AuditEntry is one line of the CA's audit trail: who did what to which
// certificate, and how it ended.
type AuditEntry struct {
	Time time.Time `json:"time"`
	// Actor is the requester's certificate subject (or "imapgate ca init", …).
	Actor       string `json:"actor"`
	ActorSerial string `json:"actor_serial,omitempty"`
	// Role is the requester's role (admin, enroll).
	Role       string `json:"role,omitempty"`
	RemoteAddr string `json:"remote_addr,omitempty"`
	// Action: issue, issue-role, issue-server, issue-ca-tls, revoke,
	// record-ca-tls; the CA's refusals use the action that was refused; a
	// help desk's own actions (POST /api/v1/audit) their own names.
	Action string `json:"action"`
	// Kind is the kind of certificate concerned (user, role, server, ca-tls).
	Kind   string `json:"kind,omitempty"`
	Serial string `json:"serial,omitempty"`
	// User is the mailbox user, a role holder's name or a server's names.
	User        string `json:"user,omitempty"`
	TokenSerial string `json:"token_serial,omitempty"`
	// Result is ok, refused, failed or pending.
	Result string `json:"result"`
	// Reason says why it was refused or failed, or the revocation reason.
	Reason string `json:"reason,omitempty"`
	// Reported marks an entry a client recorded (POST /api/v1/audit)
	// rather than one the CA wrote about its own work.
	Reported bool `json:"reported,omitempty"`
}

// UnmarshalJSON also reads the entries of imapgate versions before the
// audit API ({action, serial, target, detail, by{…}}).
func (e *AuditEntry) UnmarshalJSON(b []byte) error {
	type plain AuditEntry
	var v struct {
		plain
		Target string    `json:"target"`
		Detail string    `json:"detail"`
		By     Requester `json:"by"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*e = AuditEntry(v.plain)
	if e.Actor == "" && v.By.Subject != "" {
		e.Actor, e.ActorSerial, e.Role, e.RemoteAddr = v.By.Subject, v.By.Serial, string(v.By.Role), v.By.RemoteAddr
		e.User, e.Reason, e.Result = v.Target, v.Detail, resultOK
		switch e.Action {
		case "issue":
			e.Kind = KindUser
		case "issue-role":
			e.Kind = KindRole
		}
	}
	return nil
}

func (e *AuditEntry) setActor(by Requester) {
	e.Actor, e.ActorSerial, e.Role, e.RemoteAddr = by.Subject, by.Serial, string(by.Role), by.RemoteAddr
}

// ErrAudit: the audit trail could not be written, so the operation was not done.
var ErrAudit = errors.New("audit trail not writable")

// writeAudit stores the entry under key (a new one when key is empty) and
// logs it; it returns the key.
func (c *CA) writeAudit(ctx context.Context, key string, e AuditEntry) (string, error) {
	if e.Time.IsZero() {
		e.Time = c.now().UTC()
	}
	lvl := slog.LevelInfo
	if e.Result == resultRefused || e.Result == resultFailed {
		lvl = slog.LevelWarn
	}
	c.log.LogAttrs(ctx, lvl, "ca: audit "+e.Action, slog.String("result", e.Result), slog.String("kind", e.Kind),
		slog.String("serial", e.Serial), slog.String("user", e.User), slog.String("token_serial", e.TokenSerial),
		slog.String("reason", e.Reason), slog.Bool("reported", e.Reported),
		slog.Group("by", "subject", e.Actor, "serial", e.ActorSerial, "role", e.Role, "remote_ip", e.RemoteAddr))
	b, err := json.Marshal(e)
	if err != nil {
		return "", err
	}
	rewrite := key != ""
	if !rewrite {
		var rnd [4]byte
		_, _ = rand.Read(rnd[:])
		key = e.Time.Format("20060102T150405.000000000Z") + "-" + hex.EncodeToString(rnd[:])
	}
	if err := c.db.Set(auditTable, []byte(key), b); err != nil {
		c.log.Error("ca: audit entry not stored", "action", e.Action, "serial", e.Serial, "error", err)
		return "", fmt.Errorf("%w: %v", ErrAudit, err)
	}
	if c.auditIx != nil {
		c.auditIx.put(key, e, rewrite)
	}
	return key, nil
}

// auditPending is an operation's audit entry, written as pending before the
// operation and finished with its outcome.
type auditPending struct {
	c     *CA
	key   string
	entry AuditEntry
}

// beginAudit writes the pending entry; if it cannot, the operation must not
// be done.
func (c *CA) beginAudit(ctx context.Context, e AuditEntry, by Requester) (*auditPending, error) {
	e.setActor(by)
	e.Result = resultPending
	// The outcome keeps the pending entry's time, as it keeps its key.
	e.Time = c.now().UTC()
	key, err := c.writeAudit(ctx, "", e)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: nothing was done: %w", e.Action, err)
	}
	return &auditPending{c: c, key: key, entry: e}, nil
}

// finish replaces the pending entry with the outcome (same key and time).
func (p *auditPending) finish(ctx context.Context, serial, result, reason string) error {
	if serial != "" {
		p.entry.Serial = serial
	}
	p.entry.Result = result
	if reason != "" {
		if p.entry.Reason != "" {
			reason = p.entry.Reason + "; " + reason
		}
		p.entry.Reason = reason
	}
	if _, err := p.c.writeAudit(context.WithoutCancel(ctx), p.key, p.entry); err != nil {
		return fmt.Errorf("ca: %s %s: %w", p.entry.Action, p.entry.Serial, err)
	}
	return nil
}

// auditRefusal records a refused request. It is best-effort: the refusal
// stands whether or not it could be recorded (writeAudit logs a failure).
func (c *CA) auditRefusal(ctx context.Context, e AuditEntry, by Requester, reason string) {
	e.setActor(by)
	e.Result, e.Reason = resultRefused, reason
	_, _ = c.writeAudit(context.WithoutCancel(ctx), "", e)
}

// AuditQuery selects audit entries.
type AuditQuery struct {
	Serial string // hex; empty: any
	User   string // case-insensitive; empty: any
	// Kinds, when not empty, keeps only entries about these kinds of certificate.
	Kinds []string
	// Limit is the most entries returned (the newest); 0 means 100.
	Limit int
}

// MaxAuditLimit bounds one audit listing.
const MaxAuditLimit = 1000

// Audit returns the audit entries that match q, newest first.
func (c *CA) Audit(q AuditQuery) ([]AuditEntry, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	q.Limit = min(q.Limit, MaxAuditLimit)
	if q.Serial != "" {
		n, err := ParseSerial(q.Serial)
		if err != nil {
			return nil, err
		}
		q.Serial = SerialHex(n)
	}
	if c.auditIx != nil {
		return c.auditIndexed(q)
	}
	all, err := c.auditScans.all(c)
	if err != nil {
		return nil, err
	}
	out := []AuditEntry{}
	for _, e := range all {
		if len(out) == q.Limit {
			break
		}
		if q.Serial != "" && e.Serial != q.Serial || q.User != "" && !strings.EqualFold(e.User, q.User) {
			continue
		}
		if len(q.Kinds) > 0 && !slices.Contains(q.Kinds, e.Kind) {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// auditIndexed is Audit through the index: at most q.Limit entries read.
func (c *CA) auditIndexed(q AuditQuery) ([]AuditEntry, error) {
	out := []AuditEntry{}
	for _, k := range c.auditIx.keys(q, q.Limit) {
		b, err := c.db.Get(auditTable, []byte(k))
		if err != nil {
			return nil, fmt.Errorf("ca: read audit entry %s: %w", k, err)
		}
		var e AuditEntry
		if json.Unmarshal(b, &e) != nil {
			continue // it decoded when indexed: the table was changed behind the CA
		}
		out = append(out, e)
	}
	return out, nil
}

// ReportRequest is a help desk's own action for the trail (POST
// /api/v1/audit): a PIN change, an unblock, a wipe, an enrollment step.
type ReportRequest struct {
	Action      string `json:"action"`
	User        string `json:"user"`
	Serial      string `json:"serial"`
	TokenSerial string `json:"token_serial"`
	Result      string `json:"result"`
	Reason      string `json:"reason"`
}

var reportAction = regexp.MustCompile(`^[a-z][a-z0-9-]{0,39}$`)

// printable: no control characters (they would forge lines in a log or a
// terminal), at most n bytes.
func printable(field, s string, n int) error {
	if len(s) > n {
		return badRequest("%s is longer than %d bytes", field, n)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return badRequest("%s holds a control character", field)
		}
	}
	return nil
}

// Report records a help desk's action, with the requester as actor. The
// CA's own action names (issue…, revoke…, record…) are refused, so a client
// cannot write an entry that reads as the CA's.
func (c *CA) Report(ctx context.Context, r ReportRequest, by Requester) (AuditEntry, error) {
	e, err := checkReport(r)
	if err != nil {
		return AuditEntry{}, err
	}
	e.setActor(by)
	e.Time = c.now().UTC()
	if _, err := c.writeAudit(ctx, "", e); err != nil {
		return AuditEntry{}, err
	}
	return e, nil
}

// checkReport is the policy of a reported entry that needs no CA state.
func checkReport(r ReportRequest) (AuditEntry, error) {
	if !reportAction.MatchString(r.Action) {
		return AuditEntry{}, badRequest("action %q: use a short lower-case name such as pin-change, unblock, wipe, enroll-start", r.Action)
	}
	for _, p := range []string{"issue", "revoke", "record"} {
		if strings.HasPrefix(r.Action, p) {
			return AuditEntry{}, badRequest("action %q: names starting with %s are the CA's own", r.Action, p)
		}
	}
	e := AuditEntry{Action: r.Action, Kind: KindUser, Reported: true, TokenSerial: r.TokenSerial, Result: r.Result, Reason: r.Reason}
	if r.User != "" {
		u, err := NormalizeIdentity(r.User)
		if err != nil {
			return AuditEntry{}, err
		}
		e.User = u
	}
	if r.Serial != "" {
		n, err := ParseSerial(r.Serial)
		if err != nil {
			return AuditEntry{}, err
		}
		e.Serial = SerialHex(n)
	}
	switch e.Result {
	case "":
		e.Result = resultOK
	case resultOK, resultFailed, resultRefused:
	default:
		return AuditEntry{}, badRequest("result %q: use ok, failed or refused", r.Result)
	}
	if err := printable("token_serial", e.TokenSerial, 64); err != nil {
		return AuditEntry{}, err
	}
	if err := printable("reason", e.Reason, 256); err != nil {
		return AuditEntry{}, err
	}
	return e, nil
}
