package ca

import (
	"crypto/x509"
	"encoding/asn1"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Extensions a CSR may carry. Every profile sets the certificate's
// extensions itself; a CSR's own are only checked, never copied.
var (
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidSubjectKeyID     = asn1.ObjectIdentifier{2, 5, 29, 14}
)

// extensionNames names the extensions a refusal may mention, so the
// requester reads more than an OID.
var extensionNames = map[string]string{
	"2.5.29.17":               "subjectAltName",
	"2.5.29.19":               "basicConstraints",
	"2.5.29.15":               "keyUsage",
	"2.5.29.37":               "extKeyUsage",
	"2.5.29.14":               "subjectKeyIdentifier",
	"2.5.29.30":               "nameConstraints",
	"2.5.29.32":               "certificatePolicies",
	"2.5.29.31":               "cRLDistributionPoints",
	"1.3.6.1.5.5.7.1.1":       "authorityInfoAccess",
	"1.3.6.1.5.5.7.1.24":      "TLS feature (OCSP must-staple)",
	"1.3.6.1.4.1.311.20.2":    "Microsoft certificate template name",
	"1.3.6.1.4.1.311.21.7":    "Microsoft certificate template",
	"2.16.840.1.113730.1.1":   "Netscape certificate type",
	"1.3.6.1.4.1.11129.2.4.3": "CT precertificate poison",
}

func extensionName(oid asn1.ObjectIdentifier) string {
	if n, ok := extensionNames[oid.String()]; ok {
		return fmt.Sprintf("%s (%s)", n, oid)
	}
	return oid.String()
}

// sanTags are the GeneralName choices (RFC 5280 §4.2.1.6) Go's parser
// skips silently; a CSR that asks for one is refused rather than have the
// name quietly dropped. otherName is how a UPN (a Windows logon name) is
// asked for: a certificate naming someone else.
var sanTags = map[uint8]string{
	0: "otherName (a UPN or other foreign name)",
	3: "x400Address",
	4: "directoryName",
	5: "ediPartyName",
	8: "registeredID",
}

// checkCSRExtensions refuses what a profile would otherwise drop without a
// word: SAN name types it does not carry, a CSR asking to be a CA, and any
// critical extension imapgate does not know.
func checkCSRExtensions(csr *x509.CertificateRequest) error {
	for _, ext := range csr.Extensions {
		switch {
		case ext.Id.Equal(oidSubjectAltName):
			if err := checkSANTypes(ext.Value); err != nil {
				return err
			}
		case ext.Id.Equal(oidBasicConstraints):
			var bc struct {
				IsCA       bool `asn1:"optional"`
				MaxPathLen int  `asn1:"optional,default:-1"`
			}
			if rest, err := asn1.Unmarshal(ext.Value, &bc); err != nil || len(rest) > 0 {
				return badRequest("the CSR's basicConstraints extension (2.5.29.19) cannot be parsed")
			}
			if bc.IsCA {
				return badRequest("the CSR asks for basicConstraints CA:TRUE (2.5.29.19): this CA issues end-entity certificates only; remove the extension")
			}
		case ext.Id.Equal(oidKeyUsage), ext.Id.Equal(oidExtKeyUsage), ext.Id.Equal(oidSubjectKeyID):
			// The profile sets its own; the CSR's are ignored whether critical or not.
		case ext.Critical:
			return badRequest("the CSR carries the critical extension %s, which this CA does not know: remove it from the request", extensionName(ext.Id))
		}
	}
	return nil
}

func checkSANTypes(der []byte) error {
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return badRequest("the CSR's subjectAltName extension (2.5.29.17) cannot be parsed")
	}
	for !seq.Empty() {
		var name cryptobyte.String
		var tag cbasn1.Tag
		if !seq.ReadAnyASN1Element(&name, &tag) {
			return badRequest("the CSR's subjectAltName extension (2.5.29.17) cannot be parsed")
		}
		if what, ok := sanTags[uint8(tag)&0x1f]; ok && uint8(tag)&0xc0 == 0x80 {
			return badRequest("the CSR's subjectAltName asks for an %s name (extension 2.5.29.17): a certificate here carries only the names its profile sets; remove it from the request", what)
		}
	}
	return nil
}
