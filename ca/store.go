package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/smallstep/certificates/db"
)

// imapgate's own tables beside smallstep's (x509_certs, revoked_x509_certs, x509_crl).
var (
	// certsTable: decimal serial → Record (JSON). smallstep keeps the DER itself.
	certsTable = []byte("imapgate_certs")
	// auditTable: time-ordered key → AuditEvent (JSON); append-only.
	auditTable = []byte("imapgate_audit")
)

// Record is what the CA remembers of an issued certificate besides the DER.
type Record struct {
	Serial   string `json:"serial"` // hex, as openssl prints it
	Identity string `json:"user,omitempty"`
	Role     Role   `json:"role,omitempty"`
	// Kind is user, role, server or ca-tls (KindUser…); records written
	// before it existed have none, and KindOf reads them.
	Kind string `json:"kind,omitempty"`
	// DNSNames and IPAddresses are a server certificate's names.
	DNSNames    []string  `json:"dns,omitempty"`
	IPAddresses []string  `json:"ip,omitempty"`
	Subject     string    `json:"subject"`
	KeyType     string    `json:"key_type"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	IssuedAt    time.Time `json:"issued_at"`
	IssuedBy    Requester `json:"issued_by"`
}

// CertStatus is a Record with its current state.
type CertStatus struct {
	Record
	// Status is "valid", "revoked" or "expired".
	Status     string     `json:"status"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	ReasonCode int        `json:"reason_code,omitempty"`
	Reason     string     `json:"reason,omitempty"`
}

// AuditEvent is one line of the CA's audit trail: who did what to which certificate.
type AuditEvent struct {
	Time   time.Time `json:"time"`
	Action string    `json:"action"` // issue, issue-role, revoke
	Serial string    `json:"serial"`
	Target string    `json:"target"` // the user, or the role certificate's name
	Detail string    `json:"detail,omitempty"`
	By     Requester `json:"by"`
}

func newRecord(cert *x509.Certificate, identity string, role Role, keyType string, by Requester) Record {
	r := Record{
		Serial: SerialHex(cert.SerialNumber), Identity: identity, Role: role,
		Subject: cert.Subject.String(), KeyType: keyType,
		NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, IssuedAt: time.Now().UTC(), IssuedBy: by,
	}
	r.Kind = KindOf(r)
	return r
}

// KindOf is the record's kind; records from before Kind existed are a
// role's when they carry one and a user's otherwise.
func KindOf(r Record) string {
	switch {
	case r.Kind != "":
		return r.Kind
	case r.Role != "":
		return KindRole
	}
	return KindUser
}

// record stores what the CA remembers of a certificate it just signed, and
// its audit entry; if either cannot be written the issuance fails (the
// certificate is never handed out).
func (c *CA) record(ctx context.Context, iss *Issued, rec Record, action, target string) error {
	iss.Record = rec
	if err := c.putRecord(rec); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	c.audit(ctx, action, rec.Serial, target, string(rec.Role), Requester(rec.IssuedBy))
	return nil
}

func (c *CA) putRecord(r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	n, _ := ParseSerial(r.Serial)
	return c.db.Set(certsTable, []byte(n.String()), b)
}

// audit writes the event to the DB and the log. A failed DB write is logged
// loudly but does not undo the operation, which has already happened.
func (c *CA) audit(ctx context.Context, action, serial, target, detail string, by Requester) {
	ev := AuditEvent{Time: time.Now().UTC(), Action: action, Serial: serial, Target: target, Detail: detail, By: by}
	c.log.LogAttrs(ctx, slog.LevelInfo, "ca: "+action,
		slog.String("serial", serial), slog.String("target", target), slog.String("detail", detail), by.logAttrs())
	b, _ := json.Marshal(ev)
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	key := ev.Time.Format("20060102T150405.000000000Z") + "-" + hex.EncodeToString(rnd[:])
	if err := c.db.Set(auditTable, []byte(key), b); err != nil {
		c.log.Error("ca: audit record not stored", "action", action, "serial", serial, "error", err)
	}
}

// Audit returns the audit trail, oldest first.
func (c *CA) Audit() ([]AuditEvent, error) {
	ents, err := c.db.List(auditTable)
	if err != nil {
		return nil, fmt.Errorf("ca: read audit trail: %w", err)
	}
	out := make([]AuditEvent, 0, len(ents))
	for _, e := range ents {
		var ev AuditEvent
		if err := json.Unmarshal(e.Value, &ev); err == nil {
			out = append(out, ev)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, nil
}

// List returns issued certificates, newest first; user filters by mailbox
// identity (case-insensitive), empty means all.
func (c *CA) List(user string) ([]CertStatus, error) {
	ents, err := c.db.List(certsTable)
	if err != nil {
		return nil, fmt.Errorf("ca: list certificates: %w", err)
	}
	revoked, err := c.revokedIndex()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := []CertStatus{}
	for _, e := range ents {
		var r Record
		if err := json.Unmarshal(e.Value, &r); err != nil {
			continue
		}
		if user != "" && !strings.EqualFold(r.Identity, user) {
			continue
		}
		r.Kind = KindOf(r)
		st := CertStatus{Record: r, Status: "valid"}
		if rv, ok := revoked[string(e.Key)]; ok {
			t := rv.RevokedAt
			st.Status, st.RevokedAt, st.ReasonCode, st.Reason = "revoked", &t, rv.ReasonCode, rv.Reason
		} else if now.After(r.NotAfter) {
			st.Status = "expired"
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IssuedAt.After(out[j].IssuedAt) })
	return out, nil
}

func (c *CA) revokedIndex() (map[string]db.RevokedCertificateInfo, error) {
	list, err := c.db.GetRevokedCertificates()
	if err != nil {
		return nil, fmt.Errorf("ca: read revocations: %w", err)
	}
	m := make(map[string]db.RevokedCertificateInfo, len(*list))
	for _, r := range *list {
		m[r.Serial] = r
	}
	return m, nil
}

// IsRevoked reports whether the certificate with this serial is revoked. The API
// uses it so that a revoked agent or admin certificate loses its access at once.
func (c *CA) IsRevoked(cert *x509.Certificate) (bool, error) {
	return c.db.IsRevoked(cert.SerialNumber.String())
}
