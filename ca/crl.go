package ca

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"time"

	"github.com/smallstep/certificates/db"
	"github.com/smallstep/nosql/database"
)

// The CRL is signed here rather than by smallstep's own generator: smallstep
// serialises generation with an in-process mutex only, so two CA nodes on one
// PostgreSQL database can both read CRL number n and the revocation list at the
// same moment, and the later write can drop a revocation the other node has just
// made — until the next renewal, hours later. Here every generation, on any node,
// holds a lock row in the shared database, reads the revocations inside it and
// takes the next number, so the stored CRL always lists every committed
// revocation and its number strictly increases.

var (
	locksTable = []byte("imapgate_locks")
	crlLockKey = []byte("crl")
	// crlMetaTable holds a few bytes about the stored CRL (number, ETag) so that
	// a poll can be answered without reading and decoding the whole CRL, which
	// for 100,000 entries is megabytes (and JSON-base64 in smallstep's table).
	crlMetaTable = []byte("imapgate_crl")
	crlMetaKey   = []byte("current")
	// expiredCRLGrace keeps an entry on the CRL this long after the certificate
	// expires (as smallstep does), so no relying party sees it vanish early.
	expiredCRLGrace = time.Hour
	// crlLockTTL bounds how long a crashed node can block CRL generation.
	crlLockTTL = 30 * time.Second
	// crlSeqKey (in crlMetaTable) counts revocations on every node: Revoke
	// raises it once smallstep has stored the revocation, and a CRL's metadata
	// row records the count its signer read before reading the revocations. A
	// count above that names a revocation the stored CRL may not list, which
	// the schedule then publishes within a tick, whichever node made it.
	crlSeqKey = []byte("revocations")
	// revokeCRLWait bounds how long a revocation waits to re-sign the CRL
	// (mostly: for another node's lock) before it answers "pending".
	revokeCRLWait = crlLockTTL
)

var oidIssuingDistributionPoint = asn1.ObjectIdentifier{2, 5, 29, 28}

// RFC 5280 §5.2.5, only the distribution point: that is what makes OpenSSL match
// the CRL to the certificates' CRL distribution point.
type issuingDistributionPoint struct {
	DistributionPoint distributionPointName `asn1:"optional,tag:0"`
}

type distributionPointName struct {
	FullName []asn1.RawValue `asn1:"optional,tag:0"`
}

func idpExtension(uri string) (pkix.Extension, error) {
	b, err := asn1.Marshal(issuingDistributionPoint{DistributionPoint: distributionPointName{
		FullName: []asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(uri)}},
	}})
	if err != nil {
		return pkix.Extension{}, err
	}
	return pkix.Extension{Id: oidIssuingDistributionPoint, Critical: true, Value: b}, nil
}

type lockValue struct {
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
}

// crlLock is a held CRL lock: the row value this node wrote.
type crlLock struct {
	c    *CA
	mine []byte
}

// lockCRL takes the cluster-wide CRL lock: a row in the shared database,
// compare-and-swapped from free (absent or expired) to ours.
func (c *CA) lockCRL(ctx context.Context) (*crlLock, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	owner := hex.EncodeToString(rnd[:])
	for wait := 10 * time.Millisecond; ; wait = min(wait*2, 250*time.Millisecond) {
		expires := c.now().Add(crlLockTTL)
		mine, _ := json.Marshal(lockValue{Owner: owner, Expires: expires})
		cur, err := c.db.Get(locksTable, crlLockKey)
		if err != nil && !database.IsErrNotFound(err) {
			return nil, fmt.Errorf("ca: CRL lock: %w", err)
		}
		free := cur == nil
		if !free {
			var lv lockValue
			free = json.Unmarshal(cur, &lv) != nil || c.now().After(lv.Expires)
		}
		if free {
			// A failed swap (or a unique-key error when two nodes insert the row at
			// once) means another node got there first: wait and look again.
			if _, swapped, err := c.db.CmpAndSwap(locksTable, crlLockKey, cur, mine); err == nil && swapped {
				return &crlLock{c: c, mine: mine}, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("ca: CRL lock: another CA node holds it: %w", ctx.Err())
		case <-time.After(wait):
		}
	}
}

func (l *crlLock) unlock() {
	released, _ := json.Marshal(lockValue{})
	l.c.db.CmpAndSwap(locksTable, crlLockKey, l.mine, released)
}

// errCRLOvertaken: another node stored a CRL, or may have, while this one was
// signing; what this one signed is discarded and it signs again.
var errCRLOvertaken = errors.New("overtaken by another CA node")

// held checks, just before storing, that the lock is still this node's: a
// signing slower than the TTL (or a clock behind another node's) lets another
// node take it over. It is a cheap early refusal; what makes a lost revocation or a
// repeated CRL number impossible is the compare-and-swap of the CRL itself.
func (l *crlLock) held() error {
	cur, err := l.c.db.Get(locksTable, crlLockKey)
	if err != nil && !database.IsErrNotFound(err) {
		return fmt.Errorf("ca: CRL lock: %w", err)
	}
	// Still our row means nobody took the lock, however long the signing
	// took: taking it over is a compare-and-swap of this row. Refusing on our
	// own clock's expiry instead would refuse a lone node whose HSM or
	// database stalls past the TTL, every time.
	if !bytes.Equal(cur, l.mine) {
		return fmt.Errorf("ca: CRL lock: %w: it took the lock while this node was signing", errCRLOvertaken)
	}
	return nil
}

// ensureCRLRows creates the lock and revocation-count rows if they are
// missing. Every later change to them is a compare-and-swap of an existing row,
// which PostgreSQL serialises (SELECT … FOR UPDATE); a swap from "absent" is an
// upsert there, which two nodes could both win. The first Open of a CA is
// 'ca init', one process, so the rows exist before a second node starts.
func (c *CA) ensureCRLRows() error {
	released, _ := json.Marshal(lockValue{})
	for _, r := range []struct{ table, key, value []byte }{
		{locksTable, crlLockKey, released},
		{crlMetaTable, crlSeqKey, []byte("0")},
	} {
		if _, _, err := c.db.CmpAndSwap(r.table, r.key, nil, r.value); err != nil {
			return fmt.Errorf("ca: create row %s/%s: %w", r.table, r.key, err)
		}
	}
	return nil
}

// revocationCount is the number of revocations made so far (crlSeqKey).
func (c *CA) revocationCount() (raw []byte, n int64, err error) {
	raw, err = c.db.Get(crlMetaTable, crlSeqKey)
	if database.IsErrNotFound(err) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("ca: read the revocation count: %w", err)
	}
	n, err = strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("ca: revocation count %q: %w", raw, err)
	}
	return raw, n, nil
}

// noteRevocation raises the revocation count after a revocation is stored.
func (c *CA) noteRevocation() error {
	for range 20 {
		raw, n, err := c.revocationCount()
		if err != nil {
			return err
		}
		_, swapped, err := c.db.CmpAndSwap(crlMetaTable, crlSeqKey, raw, []byte(strconv.FormatInt(n+1, 10)))
		if err != nil {
			return fmt.Errorf("ca: raise the revocation count: %w", err)
		}
		if swapped {
			return nil
		}
	}
	return errors.New("ca: raise the revocation count: too many concurrent revocations")
}

// generateCRL signs a new CRL with every unexpired revocation and stores it.
func (c *CA) generateCRL(ctx context.Context) (*db.CertificateRevocationListInfo, error) {
	return c.signCRL(ctx, nil)
}

// signCRL is generateCRL; when need is not nil it is asked again under the
// lock, and nothing is signed if it says no (another node has just done it).
func (c *CA) signCRL(ctx context.Context, need func() string) (*db.CertificateRevocationListInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, crlLockTTL)
	defer cancel()
	for {
		info, err := c.signCRLOnce(ctx, need)
		if !errors.Is(err, errCRLOvertaken) || ctx.Err() != nil {
			return info, err
		}
		c.log.Warn("ca: CRL signing overtaken by another node; signing again", "error", err)
	}
}

// smallstep's row for the CRL (db.StoreCRL, db.GetCRL), swapped here directly.
var (
	crlTable = []byte("x509_crl")
	crlKey   = []byte("crl")
)

func (c *CA) signCRLOnce(ctx context.Context, need func() string) (*db.CertificateRevocationListInfo, error) {
	lock, err := c.lockCRL(ctx)
	if err != nil {
		return nil, err
	}
	defer lock.unlock()
	if need != nil && need() == "" {
		return nil, nil
	}

	_, seq, err := c.revocationCount()
	if err != nil {
		return nil, err
	}
	// The stored row as read, byte for byte: the new CRL replaces exactly this
	// one or is not stored (see below).
	prevRaw, err := c.db.Get(crlTable, crlKey)
	if err != nil && !database.IsErrNotFound(err) {
		return nil, fmt.Errorf("ca: read stored CRL: %w", err)
	}
	// The number follows the clock (milliseconds since 1970) and is at least
	// one above the stored CRL's. The stored one alone would not do: a
	// database restored from a backup holds an old CRL, and numbering on from
	// it would repeat numbers the fronts have seen, which they refuse as a
	// rollback. From the clock, the restored CA's first CRL is above every
	// CRL signed before the restore (unless its clock is behind the old one's,
	// or the old one signed more than one CRL a millisecond, for a while).
	number := c.now().UnixMilli()
	if prevRaw != nil {
		var prev db.CertificateRevocationListInfo
		if err := json.Unmarshal(prevRaw, &prev); err != nil {
			return nil, fmt.Errorf("ca: read stored CRL: %w", err)
		}
		number = max(number, prev.Number+1)
	}
	revoked, err := c.db.GetRevokedCertificates()
	if err != nil {
		return nil, fmt.Errorf("ca: read revocations: %w", err)
	}
	now := c.now().Truncate(time.Second).UTC()
	entries := make([]x509.RevocationListEntry, 0, len(*revoked))
	for _, r := range *revoked {
		if !r.ExpiresAt.IsZero() && r.ExpiresAt.Add(expiredCRLGrace).Before(now) {
			continue
		}
		sn, ok := new(big.Int).SetString(r.Serial, 10)
		if !ok {
			c.log.Error("ca: revocation row with a malformed serial skipped", "serial", r.Serial)
			continue
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: sn, RevocationTime: r.RevokedAt, ReasonCode: r.ReasonCode})
	}
	idp, err := idpExtension(c.cfg.CRLURL())
	if err != nil {
		return nil, err
	}
	validity := c.crlConfig().Validity.Duration
	tpl := &x509.RevocationList{
		Number: big.NewInt(number), ThisUpdate: now, NextUpdate: now.Add(validity),
		RevokedCertificateEntries: entries, ExtraExtensions: []pkix.Extension{idp},
	}
	der, err := x509.CreateRevocationList(rand.Reader, tpl, c.inter, c.interKey)
	if err != nil {
		return nil, fmt.Errorf("ca: sign CRL: %w", err)
	}
	info := &db.CertificateRevocationListInfo{Number: number, ExpiresAt: tpl.NextUpdate, Duration: validity, DER: der}
	infoRaw, err := json.Marshal(info) // as db.StoreCRL writes it
	if err != nil {
		return nil, fmt.Errorf("ca: store CRL: %w", err)
	}
	if err := lock.held(); err != nil {
		return nil, err
	}
	// The metadata row goes first: every node serves its cached CRL while the
	// row names it, so a row left naming the old CRL (a failed write after the
	// new one is stored) would hide the new one on those nodes until the next
	// CRL. Without the row, readers load the stored CRL: slower, still correct;
	// and the schedule re-signs (and so rewrites the row) within a tick.
	if err := c.db.Del(crlMetaTable, crlMetaKey); err != nil {
		return nil, fmt.Errorf("ca: store CRL: clear its metadata row: %w", err)
	}
	// Fencing: store only over the CRL this signing started from. A node that
	// lost the lock mid-way (slower than the TTL, clocks apart) finds another
	// CRL there and signs again rather than repeating its number or dropping a
	// revocation the other one published. (The very first CRL is swapped from
	// "absent", which PostgreSQL does not serialise; 'ca init' makes it, alone.)
	_, swapped, err := c.db.CmpAndSwap(crlTable, crlKey, prevRaw, infoRaw)
	if err != nil {
		return nil, fmt.Errorf("ca: store CRL: %w", err)
	}
	if !swapped {
		return nil, fmt.Errorf("ca: store CRL %d: %w: it stored a CRL while this node was signing", number, errCRLOvertaken)
	}
	crl := crlOf(info)
	meta, _ := json.Marshal(crlMeta{Number: number, ETag: crl.ETag, ThisUpdate: now, Covers: seq})
	// Into the row removed above: if it is there again, a node that signed after
	// this one wrote it, and it must stay.
	if _, _, err := c.db.CmpAndSwap(crlMetaTable, crlMetaKey, nil, meta); err != nil {
		c.log.Error("ca: CRL stored, but not its metadata row; nodes read the whole CRL until it is re-signed", "number", number, "error", err)
	}
	// This node serves the new CRL from now on without reading it back.
	c.crlCache.Store(crl)
	return info, nil
}

func crlOf(info *db.CertificateRevocationListInfo) *CRL {
	return &CRL{
		DER: info.DER, Number: info.Number, NextUpdate: info.ExpiresAt,
		// thisUpdate = nextUpdate − validity as signed; parsing a large CRL on
		// every request would cost more than it tells.
		ThisUpdate: info.ExpiresAt.Add(-info.Duration),
		ETag:       etagOf(info.DER),
	}
}

type crlMeta struct {
	Number     int64     `json:"number"`
	ETag       string    `json:"etag"`
	ThisUpdate time.Time `json:"this_update"`
	// Covers is the revocation count read before the revocations were: every
	// revocation counted up to it is on this CRL.
	Covers int64 `json:"covers"`
}

func etagOf(der []byte) string {
	sum := sha256.Sum256(der)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}

// crlTick is how often the schedule looks at the stored CRL: crl.check_interval,
// or a quarter of crl.renew_period if that is shorter, so a renewal is never
// more than a quarter period late.
func (c *CA) crlTick() time.Duration {
	cfg := c.crlConfig()
	return max(min(cfg.CheckInterval.Duration, cfg.RenewPeriod.Duration/4), 10*time.Millisecond)
}

// runCRLSchedule re-signs the CRL, whichever node signed it last, when a
// revocation (on any node) is not on it yet — its own signing failed, say,
// because another node held the lock or the client went away — and once it is
// renew_period old. The check reads two small rows, not the CRL.
func (c *CA) runCRLSchedule(stop <-chan struct{}) {
	defer close(c.crlDone)
	t := time.NewTicker(c.crlTick())
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-c.crlKick:
			// The schedule was reloaded (SetCRLSchedule): tick at the new pace.
			t.Reset(c.crlTick())
			continue
		case <-t.C:
		}
		why := c.crlStale()
		if why == "" {
			continue
		}
		if _, err := c.signCRL(context.Background(), c.crlStale); err != nil {
			c.log.Error("ca: CRL re-signing failed; retrying", "why", why, "retry_in", c.crlTick().String(), "error", err)
		}
	}
}

// crlStale says why the stored CRL must be re-signed now, or "" if it need not.
func (c *CA) crlStale() string {
	var meta crlMeta
	b, err := c.db.Get(crlMetaTable, crlMetaKey)
	if err != nil || json.Unmarshal(b, &meta) != nil || meta.ThisUpdate.IsZero() {
		// Missing after a failed write, or written by an older imapgate.
		return "no CRL metadata"
	}
	if _, seq, err := c.revocationCount(); err == nil && seq > meta.Covers {
		return "a revocation is not on it yet"
	}
	if c.now().Sub(meta.ThisUpdate) >= c.crlConfig().RenewPeriod.Duration {
		return "renew_period reached"
	}
	return ""
}

// CRL is the current signed CRL as the API serves it.
type CRL struct {
	DER        []byte
	Number     int64
	ThisUpdate time.Time
	NextUpdate time.Time
	// ETag is a strong validator over the DER.
	ETag string
}

// CRL returns the current CRL from the database (so every node sharing a
// PostgreSQL database serves the newest one, whichever node signed it). The
// decoded CRL is cached and reused while the small metadata row still names it.
func (c *CA) CRL() (*CRL, error) {
	var meta crlMeta
	if b, err := c.db.Get(crlMetaTable, crlMetaKey); err == nil && json.Unmarshal(b, &meta) == nil {
		if cur := c.crlCache.Load(); cur != nil && cur.ETag == meta.ETag {
			return cur, nil
		}
	}
	info, err := c.db.GetCRL()
	if err != nil {
		return nil, fmt.Errorf("ca: read CRL: %w", err)
	}
	crl := crlOf(info)
	// Cache only what the metadata names: a missing row (a new CRL is being
	// stored, or its row could not be written) caches nothing.
	if meta.ETag != "" && crl.ETag == meta.ETag {
		c.crlCache.Store(crl)
	}
	return crl, nil
}

// RegenerateCRL re-signs the CRL now.
func (c *CA) RegenerateCRL() error {
	_, err := c.generateCRL(context.Background())
	return err
}

// crlConfig is the CRL schedule in force (ca.yaml's crl section, as last
// loaded or reloaded).
func (c *CA) crlConfig() CRLConfig {
	if p := c.crlCfg.Load(); p != nil {
		return *p
	}
	return c.cfg.CRL // a CA value not made by Open (tests of a second node)
}

// SetCRLSchedule replaces the CRL schedule while the CA runs (a SIGHUP
// reload). It takes effect at the schedule's next tick: the current CRL
// keeps the validity it was signed with.
func (c *CA) SetCRLSchedule(cfg CRLConfig) error {
	probe := *c.cfg
	probe.CRL = cfg
	if err := probe.Validate(); err != nil {
		return err
	}
	c.crlCfg.Store(&cfg)
	select {
	case c.crlKick <- struct{}{}:
	default:
	}
	return nil
}
