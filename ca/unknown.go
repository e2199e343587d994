package ca

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"strings"

	"github.com/smallstep/certificates/db"
)

// Certificates the CA signed but its database does not hold: after a restore
// from a backup, every certificate issued since the backup. They still chain
// to the root, so the fronts accept them until the CRL lists them. An admin
// revokes one by its certificate (RevokeCertificate: it is recorded first) or,
// when the file is gone, by its bare serial (RevokeUnknownSerial).

// KindUnknown is the kind of a certificate recorded from its bare serial:
// the CA knows nothing of it but that number.
const KindUnknown = "unknown"

// unknownIssuer is the issued_by of a certificate the CA recorded afterwards.
const unknownIssuer = "unknown: not in the CA database"

// ParseCertificatePEM reads the first certificate of a PEM file (a leaf, or
// a chain whose first block is the leaf).
func ParseCertificatePEM(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, badRequest("the certificate is not PEM (-----BEGIN CERTIFICATE-----)")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, badRequest("the certificate does not parse: %v", err)
	}
	return cert, nil
}

// profileOf reads what kind of certificate the CA made, from the profile it
// signed: a role URI is a role's, serverAuth a server's, an e-mail address
// with clientAuth a user's.
func profileOf(cert *x509.Certificate) (kind, identity string, role Role) {
	switch {
	case RoleOf(cert) != "":
		return KindRole, "", RoleOf(cert)
	case slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth):
		return KindServer, "", ""
	case len(cert.EmailAddresses) > 0:
		return KindUser, cert.EmailAddresses[0], ""
	}
	return KindUnknown, cert.Subject.CommonName, ""
}

// RevokeCertificate revokes a certificate given whole. If the database does
// not hold it, the CA first checks that its own intermediate signed it (else
// a bad request, and nothing is stored), records it (audited as
// record-unknown, the requester as actor) and then revokes it as Revoke does.
func (c *CA) RevokeCertificate(ctx context.Context, cert *x509.Certificate, reasonCode int, comment string, by Requester) (*Revoked, error) {
	hexSerial := SerialHex(cert.SerialNumber)
	if err := cert.CheckSignatureFrom(c.inter); err != nil {
		return nil, badRequest("certificate %s (issuer %q) was not signed by this CA's intermediate %q, so this CA cannot revoke it: "+
			"revoke it at the CA that issued it (%v)", hexSerial, cert.Issuer.String(), c.inter.Subject.String(), err)
	}
	if _, err := c.lookup(cert.SerialNumber); errors.Is(err, ErrNotFound) {
		if err := c.recordUnknown(ctx, cert, by); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("ca: revoke %s: %w", hexSerial, err)
	}
	return c.Revoke(ctx, cert.SerialNumber, reasonCode, comment, by)
}

// recordUnknown stores a certificate this CA signed but does not hold, and
// its issuance record, under an audit entry of its own.
func (c *CA) recordUnknown(ctx context.Context, cert *x509.Certificate, by Requester) error {
	kind, identity, role := profileOf(cert)
	rec := newRecord(cert, identity, role, "", Requester{Subject: unknownIssuer})
	rec.Kind, rec.IssuedAt = kind, cert.NotBefore.UTC()
	if kind == KindServer {
		rec.DNSNames, rec.IPAddresses = cert.DNSNames, ipStrings(cert.IPAddresses)
	}
	if kt, err := checkKey(cert.PublicKey); err == nil {
		rec.KeyType = kt
	}
	rec.RecordedBy = &by
	user := identity
	if kind == KindServer {
		user = strings.Join(serverNames(cert.DNSNames, cert.IPAddresses), ", ")
	} else if user == "" {
		user = cert.Subject.CommonName
	}
	pending, err := c.beginAudit(ctx, AuditEntry{Action: "record-unknown", Kind: kind, Serial: rec.Serial, User: user,
		Reason: "signed by this CA's intermediate but not in its database (issued after the backup it was restored from?)"}, by)
	if err != nil {
		return err
	}
	if err := c.db.StoreCertificate(cert); err != nil {
		pending.finish(ctx, "", resultFailed, err.Error())
		return fmt.Errorf("ca: record %s: %w", rec.Serial, err)
	}
	if err := c.putRecord(rec); err != nil {
		pending.finish(ctx, "", resultFailed, err.Error())
		return fmt.Errorf("ca: record %s: %w", rec.Serial, err)
	}
	// Recorded whatever happens to the entry now; the revocation that
	// follows writes its own, and fails without it.
	_ = pending.finish(ctx, "", resultOK, "")
	return nil
}

// RevokeUnknownSerial revokes a serial the database does not hold, for a
// certificate whose file is gone: the CRL lists the serial. A serial the
// database holds is revoked as Revoke does. The CA cannot check that it
// signed such a serial; an admin's typo only puts a number on the CRL that
// no certificate of this CA carries, which costs nothing. The serial gets a
// record of kind unknown, so 'cert list' shows it revoked; it leaves the CRL
// when the intermediate expires, since no certificate outlives that.
func (c *CA) RevokeUnknownSerial(ctx context.Context, serial *big.Int, reasonCode int, comment string, by Requester) (*Revoked, error) {
	hexSerial := SerialHex(serial)
	if _, err := c.lookup(serial); err == nil {
		return c.Revoke(ctx, serial, reasonCode, comment, by)
	} else if !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("ca: revoke %s: %w", hexSerial, err)
	}
	dec, reason, err := c.prepareRevocation(serial, reasonCode, comment)
	if err != nil {
		return nil, err
	}
	pending, err := c.beginAudit(ctx, AuditEntry{Action: "revoke-unknown-serial", Kind: KindUnknown, Serial: hexSerial,
		Reason: reason + "; the serial is not in the CA database"}, by)
	if err != nil {
		return nil, err
	}
	now := c.now().UTC()
	if _, known := c.recordOf(serial); !known {
		rec := Record{Serial: hexSerial, Kind: KindUnknown, NotBefore: now, NotAfter: c.inter.NotAfter, IssuedAt: now,
			IssuedBy: Requester{Subject: unknownIssuer}, RecordedBy: &by}
		if err := c.putRecord(rec); err != nil {
			pending.finish(ctx, "", resultFailed, err.Error())
			return nil, fmt.Errorf("ca: revoke %s: record the serial: %w", hexSerial, err)
		}
	}
	// smallstep's Revoke needs the certificate for this path; the row it
	// would write is written here, with the intermediate's expiry as the
	// certificate's (the latest it can have).
	err = c.db.Revoke(&db.RevokedCertificateInfo{Serial: dec, ReasonCode: reasonCode, Reason: reason,
		RevokedAt: now, ExpiresAt: c.inter.NotAfter, MTLS: true})
	if errors.Is(err, db.ErrAlreadyExists) {
		pending.finish(ctx, "", resultRefused, "already revoked")
		return nil, c.alreadyRevoked(hexSerial)
	}
	if err != nil {
		pending.finish(ctx, "", resultFailed, err.Error())
		return nil, fmt.Errorf("ca: revoke %s: %w", hexSerial, err)
	}
	_ = pending.finish(ctx, "", resultOK, "")
	rv, err := c.publishRevocation(ctx, hexSerial)
	if rv != nil {
		rv.RevokedAt = now
	}
	return rv, err
}

// revokeRequest is a parsed POST /api/v1/revoke body.
type revokeRequest struct {
	serial  *big.Int
	cert    *x509.Certificate
	force   bool
	code    int
	comment string
}

func (r revokeRequest) serialHex() string {
	if r.serial == nil {
		return ""
	}
	return SerialHex(r.serial)
}

// parseRevokeRequest is the API's revocation intake: a serial, or a
// certificate (whose serial a serial given with it must match), the reason.
func parseRevokeRequest(body io.Reader) (revokeRequest, error) {
	var req RevokeRequestJSON
	if err := decode(body, &req); err != nil {
		return revokeRequest{}, err
	}
	out := revokeRequest{force: req.ForceUnknownSerial, comment: req.Comment}
	if req.Serial != "" || req.Certificate == "" {
		n, err := ParseSerial(req.Serial)
		if err != nil {
			return out, err
		}
		out.serial = n
	}
	if req.Certificate != "" {
		if req.ForceUnknownSerial {
			return out, badRequest("give the certificate or force_unknown_serial, not both: with the certificate the CA checks it signed it")
		}
		cert, err := ParseCertificatePEM([]byte(req.Certificate))
		if err != nil {
			return out, err
		}
		if out.serial != nil && out.serial.Cmp(cert.SerialNumber) != 0 {
			return out, badRequest("serial %s is not the certificate's serial %s", SerialHex(out.serial), SerialHex(cert.SerialNumber))
		}
		out.serial, out.cert = cert.SerialNumber, cert
	}
	code, err := ParseReason(req.Reason)
	if err != nil {
		return out, err
	}
	out.code = code
	return out, nil
}
