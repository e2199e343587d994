package ca

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/smallstep/certificates/db"
	"github.com/smallstep/nosql"
)

// imapgate's own tables beside smallstep's (x509_certs, revoked_x509_certs, x509_crl).
var (
	// certsTable: decimal serial → Record (JSON). smallstep keeps the DER itself.
	certsTable = []byte("imapgate_certs")
	// auditTable: time-ordered key → AuditEvent (JSON); append-only.
	auditTable = []byte("imapgate_audit")
	// revokedTable is smallstep's table of revocations (decimal serial →
	// db.RevokedCertificateInfo, JSON), which its db package names but does
	// not export; read by key for one serial (searchSerial).
	revokedTable = []byte("revoked_x509_certs")
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
	// RecordedBy is the admin who recorded a certificate the database did
	// not hold (revoked after a restore; see unknown.go); nil otherwise.
	RecordedBy *Requester `json:"recorded_by,omitempty"`
}

// CertStatus is a Record with its current state.
type CertStatus struct {
	Record
	// Status is "valid", "revoked" or "expired".
	Status string `json:"status"`
	// RevokedAt is null, and Reason empty, unless Status is revoked.
	RevokedAt  *time.Time `json:"revoked_at"`
	ReasonCode int        `json:"reason_code"`
	Reason     string     `json:"reason"`
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

// record stores what the CA remembers of a certificate it just signed and
// finishes the issuance's audit entry; if either cannot be written the
// issuance fails: the certificate is never handed out, and its record is
// taken back.
func (c *CA) record(ctx context.Context, iss *Issued, rec Record, pending *auditPending) error {
	iss.Record = rec
	if err := c.putRecord(rec); err != nil {
		pending.finish(ctx, rec.Serial, resultFailed, "the issuance record could not be stored: "+err.Error())
		return fmt.Errorf("record: %w", err)
	}
	if err := pending.finish(ctx, rec.Serial, resultOK, ""); err != nil {
		n, _ := ParseSerial(rec.Serial)
		if derr := c.db.Del(certsTable, []byte(n.String())); derr != nil {
			c.log.Error("ca: an issuance whose audit entry failed could not be taken back from the records", "serial", rec.Serial, "error", derr)
		} else if c.certIx != nil {
			c.certIx.del(n.String())
		}
		return err
	}
	return nil
}

func (c *CA) putRecord(r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	n, _ := ParseSerial(r.Serial)
	if err := c.db.Set(certsTable, []byte(n.String()), b); err != nil {
		return err
	}
	if c.certIx != nil {
		c.certIx.put(n.String(), r)
	}
	return nil
}

// List returns issued certificates, newest first; user filters by mailbox
// identity (case-insensitive), empty means all.
func (c *CA) List(user string) ([]CertStatus, error) { return c.Search(CertQuery{User: user}) }

// CertQuery selects issued certificates; empty fields match all.
type CertQuery struct {
	User   string // mailbox identity, case-insensitive
	Serial string // hex, as ParseSerial reads it
	// Kinds, when not empty, keeps only these kinds (KindUser…).
	Kinds []string
	// Limit is the most certificates a page holds; 0 means
	// DefaultCertLimit, and more than MaxCertLimit is MaxCertLimit.
	Limit int
	// Before is the Next of the page before; empty: the newest.
	Before string
}

// The size of a page of certificates (GET /api/v1/certs?limit=).
const (
	DefaultCertLimit = 100
	MaxCertLimit     = 1000
)

// CertPage is one page of a search. Next, when not empty, is the Before of
// the page after it; empty, this page holds the last of the matches.
type CertPage struct {
	Certs []CertStatus
	Next  string
}

// Search returns every issued certificate that matches q, newest first,
// page by page (q.Limit and q.Before are its own).
func (c *CA) Search(q CertQuery) ([]CertStatus, error) {
	q.Limit, q.Before = MaxCertLimit, ""
	out := []CertStatus{}
	for {
		p, err := c.SearchPage(q)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Certs...)
		if p.Next == "" {
			return out, nil
		}
		q.Before = p.Next
	}
}

// SearchPage returns one page of the issued certificates that match q,
// newest first (by issuance, then serial), each with its status (valid,
// revoked, expired) and revocation time and reason. On bbolt it reads only
// the records it returns (certIndex); on PostgreSQL it reads them all and
// returns a page.
func (c *CA) SearchPage(q CertQuery) (CertPage, error) {
	if q.Limit <= 0 {
		q.Limit = DefaultCertLimit
	}
	q.Limit = min(q.Limit, MaxCertLimit)
	var before *certRef
	if q.Before != "" {
		var err error
		if before, err = parseCursor(q.Before); err != nil {
			return CertPage{}, err
		}
	}
	if q.Serial != "" {
		n, err := ParseSerial(q.Serial)
		if err != nil {
			return CertPage{}, err
		}
		list, err := c.searchSerial(n.String(), q)
		if before != nil {
			list = nil // one serial is one page: there is none after it
		}
		return CertPage{Certs: list}, err
	}
	if c.certIx != nil {
		return c.searchIndexed(q, before)
	}
	return c.searchScan(q, before)
}

// searchIndexed is SearchPage through the index: two reads by key per
// certificate returned.
func (c *CA) searchIndexed(q CertQuery, before *certRef) (CertPage, error) {
	refs, more := c.certIx.page(q, before, q.Limit)
	out := CertPage{Certs: make([]CertStatus, 0, len(refs))}
	now := time.Now()
	for _, ref := range refs {
		st, ok, err := c.readStatus(ref.key, q, now)
		if err != nil {
			return CertPage{}, err
		}
		if ok { // not, when it was taken back since, or changed behind the CA
			out.Certs = append(out.Certs, st)
		}
	}
	if more {
		out.Next = cursorOf(refs[len(refs)-1])
	}
	return out, nil
}

// searchScan is SearchPage without the index: every record and revocation
// read, the matches sorted, one page of them returned.
func (c *CA) searchScan(q CertQuery, before *certRef) (CertPage, error) {
	ents, err := c.db.List(certsTable)
	if err != nil {
		return CertPage{}, fmt.Errorf("ca: list certificates: %w", err)
	}
	revoked, err := c.revokedIndex()
	if err != nil {
		return CertPage{}, err
	}
	type match struct {
		ref certRef
		st  CertStatus
	}
	now := time.Now()
	var all []match
	for _, e := range ents {
		var r Record
		if err := json.Unmarshal(e.Value, &r); err != nil {
			continue
		}
		ref := certRef{key: string(e.Key), sec: r.IssuedAt.Unix(), nsec: int32(r.IssuedAt.Nanosecond())}
		if before != nil && cmpCertRef(&ref, before) >= 0 {
			continue
		}
		rv, isRevoked := revoked[string(e.Key)]
		if st, ok := certStatus(r, q, rv, isRevoked, now); ok {
			all = append(all, match{ref, st})
		}
	}
	slices.SortFunc(all, func(a, b match) int { return cmpCertRef(&b.ref, &a.ref) })
	out := CertPage{Certs: make([]CertStatus, 0, min(len(all), q.Limit))}
	for _, m := range all[:min(len(all), q.Limit)] {
		out.Certs = append(out.Certs, m.st)
	}
	if len(all) > q.Limit {
		out.Next = cursorOf(all[q.Limit-1].ref)
	}
	return out, nil
}

// searchSerial is a search for one serial (decimal, the tables' key): two
// reads by key. The help desk's certificate page and every revocation look a
// serial up this way.
func (c *CA) searchSerial(key string, q CertQuery) ([]CertStatus, error) {
	st, ok, err := c.readStatus(key, q, time.Now())
	if err != nil || !ok {
		return []CertStatus{}, err
	}
	return []CertStatus{st}, nil
}

// readStatus reads the record and the revocation stored under key and says
// whether the record matches q. A record that is not there, or does not
// decode (a listing skips it), does not match.
func (c *CA) readStatus(key string, q CertQuery, now time.Time) (CertStatus, bool, error) {
	b, err := c.db.Get(certsTable, []byte(key))
	switch {
	case nosql.IsErrNotFound(err):
		return CertStatus{}, false, nil
	case err != nil:
		return CertStatus{}, false, fmt.Errorf("ca: read certificate %s: %w", key, err)
	}
	var r Record
	if json.Unmarshal(b, &r) != nil {
		return CertStatus{}, false, nil
	}
	var rv db.RevokedCertificateInfo
	isRevoked := false
	switch b, err := c.db.Get(revokedTable, []byte(key)); {
	case nosql.IsErrNotFound(err):
	case err != nil:
		return CertStatus{}, false, fmt.Errorf("ca: read revocation of %s: %w", key, err)
	default:
		if err := json.Unmarshal(b, &rv); err != nil {
			return CertStatus{}, false, fmt.Errorf("ca: read revocation of %s: %w", key, err)
		}
		isRevoked = true
	}
	st, ok := certStatus(r, q, rv, isRevoked, now)
	return st, ok, nil
}

// certStatus is r's status for q, and whether r matches q's user and kinds.
func certStatus(r Record, q CertQuery, rv db.RevokedCertificateInfo, revoked bool, now time.Time) (CertStatus, bool) {
	if q.User != "" && !strings.EqualFold(r.Identity, q.User) {
		return CertStatus{}, false
	}
	r.Kind = KindOf(r)
	if len(q.Kinds) > 0 && !slices.Contains(q.Kinds, r.Kind) {
		return CertStatus{}, false
	}
	st := CertStatus{Record: r, Status: "valid"}
	if revoked {
		t := rv.RevokedAt
		st.Status, st.RevokedAt, st.ReasonCode, st.Reason = "revoked", &t, rv.ReasonCode, rv.Reason
	} else if now.After(r.NotAfter) {
		st.Status = "expired"
	}
	return st, true
}

// recordOf reads the issuance record of a serial.
func (c *CA) recordOf(serial *big.Int) (Record, bool) {
	b, err := c.db.Get(certsTable, []byte(serial.String()))
	if err != nil {
		return Record{}, false
	}
	var r Record
	if json.Unmarshal(b, &r) != nil {
		return Record{}, false
	}
	return r, true
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
