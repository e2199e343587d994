package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/provisioner"
	"github.com/smallstep/certificates/db"
	"github.com/smallstep/nosql/database"
)

// ErrNotFound: no certificate with that serial was issued by this CA.
var ErrNotFound = errors.New("not found")

// ErrAlreadyRevoked: the certificate is on the CRL already.
var ErrAlreadyRevoked = errors.New("already revoked")

// Reason codes of RFC 5280 §5.3.1 that imapgate accepts. certificateHold and
// removeFromCRL are left out on purpose: a revocation here is final.
var reasonCodes = map[string]int{
	"unspecified":          0,
	"keyCompromise":        1,
	"affiliationChanged":   3,
	"superseded":           4,
	"cessationOfOperation": 5,
	"privilegeWithdrawn":   9,
}

// reasonNames is reasonCodes the other way round.
var reasonNames = func() map[int]string {
	m := make(map[int]string, len(reasonCodes))
	for n, c := range reasonCodes {
		m[c] = n
	}
	return m
}()

// ParseReason turns an RFC 5280 reason name (case-insensitive) into its code.
func ParseReason(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	for name, code := range reasonCodes {
		if strings.EqualFold(name, s) {
			return code, nil
		}
	}
	names := make([]string, 0, len(reasonCodes))
	for n := range reasonCodes {
		names = append(names, n)
	}
	return 0, badRequest("reason %q: use one of %s", s, strings.Join(slices.Sorted(slices.Values(names)), ", "))
}

// ReasonName is the RFC 5280 name of a reason code.
func ReasonName(code int) string {
	for n, c := range reasonCodes {
		if c == code {
			return n
		}
	}
	return fmt.Sprintf("reason(%d)", code)
}

// checkRevocation checks a revocation's reason code and comment.
func checkRevocation(reasonCode int, comment string) error {
	if _, ok := reasonNames[reasonCode]; !ok {
		return badRequest("reason code %d is not accepted", reasonCode)
	}
	if len(comment) > 256 {
		return badRequest("the comment is longer than 256 characters")
	}
	return nil
}

// Revoked describes a revocation that just happened.
type Revoked struct {
	Serial    string
	RevokedAt time.Time
	// CRLNumber is the first CRL that lists the certificate; 0 while CRLPending.
	CRLNumber int64
	// CRLPending: the revocation is stored, but the CRL could not be re-signed
	// in time (another node held the CRL lock, a database or HSM error). The CRL
	// schedule publishes it within PublishWithin.
	CRLPending    bool
	PublishWithin time.Duration
}

// alreadyRevoked answers a second revocation. It counts the revocation
// again: if the first one's node died between storing and counting it, the
// retry is what makes the CRL schedule publish it (at worst one extra
// re-sign).
func (c *CA) alreadyRevoked(hexSerial string) error {
	if err := c.noteRevocation(); err != nil {
		c.log.Error("ca: revocation count not raised", "serial", hexSerial, "error", err)
	}
	return fmt.Errorf("ca: revoke %s: %w", hexSerial, ErrAlreadyRevoked)
}

// Revoke stores the revocation of the certificate with this serial and
// re-signs the CRL before it returns; if that cannot be done within
// revokeCRLWait, the revocation still stands and Revoked.CRLPending says the
// schedule will publish it. comment is free text for the audit trail.
func (c *CA) Revoke(ctx context.Context, serial *big.Int, reasonCode int, comment string, by Requester) (*Revoked, error) {
	hexSerial := SerialHex(serial)
	if err := checkRevocation(reasonCode, comment); err != nil {
		return nil, err
	}
	cert, err := c.lookup(serial)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("ca: revoke %s: %w: the CA database holds no certificate with this serial (check with 'imapgate cert list'); "+
			"if this CA issued it after the backup its database was restored from, revoke it with 'imapgate cert revoke --cert FILE', "+
			"or without the file with '--force-unknown-serial'", hexSerial, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: revoke %s: %w", hexSerial, err)
	}
	dec, reason, err := c.prepareRevocation(serial, reasonCode, comment)
	if err != nil {
		return nil, err
	}
	target := cert.Subject.CommonName
	if len(cert.EmailAddresses) > 0 {
		target = cert.EmailAddresses[0]
	}
	kind := ""
	if rec, ok := c.recordOf(serial); ok {
		kind = KindOf(rec)
	}
	// The audit entry first: a revocation the trail cannot hold is not done.
	pending, err := c.beginAudit(ctx, AuditEntry{Action: "revoke", Kind: kind, Serial: hexSerial, User: target, Reason: reason}, by)
	if err != nil {
		return nil, err
	}
	// MTLS with the certificate set is smallstep's provisioner-less path (the API
	// already authorized the admin); the revoke method on the context makes it
	// record ExpiresAt so the entry is pruned from the CRL after the certificate
	// expires. smallstep's own CRL generation is off: see crl.go.
	err = c.auth.Revoke(provisioner.NewContextWithMethod(ctx, provisioner.RevokeMethod), &authority.RevokeOptions{
		Serial: dec, ReasonCode: reasonCode, Reason: reason, MTLS: true, Crt: cert,
	})
	if err != nil {
		if strings.Contains(err.Error(), "already revoked") || errors.Is(err, db.ErrAlreadyExists) {
			pending.finish(ctx, "", resultRefused, "already revoked")
			return nil, c.alreadyRevoked(hexSerial)
		}
		pending.finish(ctx, "", resultFailed, err.Error())
		return nil, fmt.Errorf("ca: revoke %s: %w", hexSerial, err)
	}
	// The revocation stands whatever happens to the entry now: one left
	// pending is read with the certificate's status (revoked).
	_ = pending.finish(ctx, "", resultOK, "")
	return c.publishRevocation(ctx, hexSerial)
}

// prepareRevocation is what every revocation checks before its audit entry: a
// reason and comment the CRL can carry, and the serial not revoked already. It
// returns the serial in the database's decimal form and the reason text stored.
func (c *CA) prepareRevocation(serial *big.Int, reasonCode int, comment string) (dec, reason string, err error) {
	hexSerial := SerialHex(serial)
	if err := checkRevocation(reasonCode, comment); err != nil {
		return "", "", err
	}
	dec = serial.String()
	rev, err := c.db.IsRevoked(dec)
	if err != nil {
		return "", "", fmt.Errorf("ca: revoke %s: check the revocation table: %w", hexSerial, err)
	}
	if rev {
		return "", "", c.alreadyRevoked(hexSerial)
	}
	reason = ReasonName(reasonCode)
	if comment != "" {
		reason += ": " + comment
	}
	return dec, reason, nil
}

// publishRevocation counts a revocation that has just been stored and
// re-signs the CRL (see Revoke).
func (c *CA) publishRevocation(ctx context.Context, hexSerial string) (*Revoked, error) {
	rv := &Revoked{Serial: hexSerial, RevokedAt: time.Now().UTC()}
	// From here on the revocation is a fact: what follows must not depend on
	// the client still waiting.
	counted := c.noteRevocation()
	if counted != nil {
		c.log.Error("ca: revocation stored but not counted; the CRL schedule cannot see it", "serial", hexSerial, "error", counted)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeCRLWait)
	defer cancel()
	info, err := c.generateCRL(sctx)
	switch {
	case err == nil:
		rv.CRLNumber = info.Number
		return rv, nil
	case counted == nil:
		rv.CRLPending, rv.PublishWithin = true, c.crlTick()
		c.log.Error("ca: revoked, but the CRL is not re-signed yet; the CRL schedule will", "serial", hexSerial,
			"within", rv.PublishWithin.String(), "error", err)
		return rv, nil
	default:
		// Neither signed nor counted: only the next renewal or restart publishes it.
		return nil, fmt.Errorf("ca: revoke %s: revoked, but the CRL could not be re-signed (%v) and the CA database did not take the revocation count (%v); it is on the CRL after the next restart of a CA node or within crl.renew_period %s: check the database and the CA log",
			hexSerial, err, counted, c.crlConfig().RenewPeriod.Duration)
	}
}

// Certificate returns an issued certificate by serial.
func (c *CA) Certificate(serial *big.Int) (*x509.Certificate, error) {
	cert, err := c.lookup(serial)
	if err != nil {
		return nil, fmt.Errorf("ca: certificate %s: %w", SerialHex(serial), err)
	}
	return cert, nil
}

// lookup reads an issued certificate. Only a serial the database does not hold
// is ErrNotFound: a database that cannot answer, or a row that does not parse,
// is the CA's fault (500), not the caller's (404).
func (c *CA) lookup(serial *big.Int) (*x509.Certificate, error) {
	cert, err := c.db.GetCertificate(serial.String())
	switch {
	case database.IsErrNotFound(err), err == nil && cert == nil:
		return nil, ErrNotFound
	case err != nil:
		return nil, fmt.Errorf("look up the certificate: %w", err)
	}
	return cert, nil
}
