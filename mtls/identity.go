package mtls

import (
	"crypto/x509"
	"fmt"
	"strings"
)

// bindIdentity decides whether login name user (authcid) with authzid may log in with
// cert. The login must equal one of the certificate's rfc822Name SANs: the local part
// exactly, the domain case-insensitively (RFC 5321: domains are case-insensitive, local
// parts are the server's business). An authzid other than empty or the authcid is
// refused: nobody logs in as somebody else through the front.
//
// It returns "" when the login is allowed, or the reason for the log. To the client
// every refusal looks like a wrong password.
func bindIdentity(cert *x509.Certificate, authzid, user string) string {
	if authzid != "" && authzid != user {
		return fmt.Sprintf("authzid %q differs from login %q", authzid, user)
	}
	if len(cert.EmailAddresses) == 0 {
		return "certificate has no e-mail address (rfc822Name SAN) to bind the login to"
	}
	for _, e := range cert.EmailAddresses {
		if sameMailbox(e, user) {
			return ""
		}
	}
	return fmt.Sprintf("login %q does not match certificate e-mail %s", user, strings.Join(cert.EmailAddresses, ", "))
}

func sameMailbox(a, b string) bool {
	ai := strings.LastIndexByte(a, '@')
	bi := strings.LastIndexByte(b, '@')
	if ai <= 0 || bi <= 0 {
		return false
	}
	return a[:ai] == b[:bi] && strings.EqualFold(a[ai+1:], b[bi+1:])
}
