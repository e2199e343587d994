package mtls

import "fmt"

// Reply is a typed IMAP protocol outcome: command handlers return one as an error and
// the pre-auth loop turns it into the tagged reply (or an untagged BYE). Handlers never
// write error lines themselves.
type Reply struct {
	// Status is NO, BAD or BYE.
	Status string
	// Code is the response code without brackets, e.g. AUTHENTICATIONFAILED.
	Code string
	// Text is what the user may see.
	Text string
	// Reason is for the log only (never sent): why the decision was made.
	Reason string
}

func (r *Reply) Error() string {
	s := "imap " + r.Status
	if r.Code != "" {
		s += " [" + r.Code + "]"
	}
	s += " " + r.Text
	if r.Reason != "" {
		s += " (" + r.Reason + ")"
	}
	return s
}

// line renders the reply with tag ("*" for untagged).
func (r *Reply) line(tag string) string {
	if r.Status == "BYE" {
		tag = "*"
	}
	if r.Code != "" {
		return fmt.Sprintf("%s %s [%s] %s\r\n", tag, r.Status, r.Code, r.Text)
	}
	return fmt.Sprintf("%s %s %s\r\n", tag, r.Status, r.Text)
}

// withReason is a copy of r that carries reason for the log.
func (r *Reply) withReason(reason string) *Reply {
	c := *r
	c.Reason = reason
	return &c
}

// The user-facing BYEs. Every text a person reads at the end of a session is here, in
// one place, and says what to do. Never modify them; withReason makes a copy.
var (
	byeRevoked = &Reply{Status: "BYE", Code: "ALERT",
		Text: "Your certificate has been revoked. Call the help desk for a new smartcard certificate."}
	byeCRLUnavailable = &Reply{Status: "BYE", Code: "UNAVAILABLE",
		Text: "Certificate status cannot be checked right now. Try again later or call the help desk."}
	// byeCRLSourceRemoved ends a live session whose CA lost its CRL source in a reload.
	byeCRLSourceRemoved = &Reply{Status: "BYE", Code: "UNAVAILABLE",
		Text: "Certificate status cannot be checked right now. Reconnect or call the help desk."}
	byeCertExpiredNow = &Reply{Status: "BYE", Code: "ALERT",
		Text: "Your certificate has expired. Call the help desk to renew it."}
	byeNoCert = &Reply{Status: "BYE", Code: "ALERT",
		Text: "No client certificate was presented. Insert your smartcard, then choose its certificate in your mail program."}
	byeNotYetValid = &Reply{Status: "BYE", Code: "ALERT",
		Text: "Your certificate is not valid yet. Check the date and time of your computer."}
	byeChainExpired = &Reply{Status: "BYE", Code: "ALERT",
		Text: "A certificate in your chain has expired. Call the help desk."}
	byeNoClientAuth = &Reply{Status: "BYE", Code: "ALERT",
		Text: "This certificate is not for e-mail login (it lacks client authentication). Choose your smartcard certificate."}
	byeWrongUsage = &Reply{Status: "BYE", Code: "ALERT",
		Text: "This certificate is not for e-mail login. Choose your smartcard certificate."}
	byeWeakKey = &Reply{Status: "BYE", Code: "ALERT",
		Text: "The key of this certificate is too weak for e-mail login. Call the help desk for a new smartcard certificate."}
	byeRoleCertificate = &Reply{Status: "BYE", Code: "ALERT",
		Text: "This is a help-desk or administrator certificate, not one for e-mail. Choose your own smartcard certificate."}
	byeUntrusted = &Reply{Status: "BYE", Code: "ALERT",
		Text: "This certificate was not issued by your organisation's mail CA. Choose your smartcard certificate."}
	byeInvalidCert = &Reply{Status: "BYE", Code: "ALERT",
		Text: "Your certificate was not accepted. Call the help desk."}
	byeShutdown = &Reply{Status: "BYE", Code: "UNAVAILABLE",
		Text: "This server is shutting down; your mail program will reconnect."}
	byeAutologout     = &Reply{Status: "BYE", Text: "Autologout: no command for too long."}
	byePreAuthTotal   = &Reply{Status: "BYE", Text: "Autologout: no login for too long. Reconnect and log in."}
	byeTooManyPlain   = &Reply{Status: "BYE", Text: "Too many commands before STARTTLS."}
	byeTooManyBad     = &Reply{Status: "BYE", Text: "Too many invalid commands."}
	byeLogout         = &Reply{Status: "BYE", Text: "Logging out."}
	byeTooManyLogins  = &Reply{Status: "BYE", Text: "Too many login attempts on this connection. Check your password and reconnect."}
	byeStartTLSInject = &Reply{Status: "BYE", Text: "Data after STARTTLS before the TLS handshake; closing."}
)

// byeCertExpired is the BYE for a leaf certificate past its notAfter.
func byeCertExpired(notAfter string) *Reply {
	return &Reply{Status: "BYE", Code: "ALERT",
		Text: fmt.Sprintf("Your certificate expired on %s. Call the help desk to renew it.", notAfter)}
}

// The tagged NOs of the pre-auth commands.
var (
	noPrivacyRequired = &Reply{Status: "NO", Code: "PRIVACYREQUIRED", Text: "Use STARTTLS with your smartcard certificate first."}
	noOnlyPlain       = &Reply{Status: "NO", Code: "CANNOT", Text: "Only AUTHENTICATE PLAIN is supported."}
	// badPasswordTooLong answers a password over maxPassword bytes.
	badPasswordTooLong = &Reply{Status: "BAD", Text: "Password too long (at most 1024 bytes)."}
)

func replyBad(text string) *Reply { return &Reply{Status: "BAD", Text: text} }

// errAuthFailed is what every failed login looks like to the client, whether the
// password was wrong, the name did not match the certificate or the authzid differed:
// the log says which.
func errAuthFailed(reason string) *Reply {
	return &Reply{Status: "NO", Code: "AUTHENTICATIONFAILED", Text: "Authentication failed.", Reason: reason}
}

func errUnavailable(text, reason string) *Reply {
	return &Reply{Status: "NO", Code: "UNAVAILABLE", Text: text, Reason: reason}
}

// The NO [UNAVAILABLE] texts of a login that was not tried.
const (
	textBackendDown  = "The mail server is not available right now. Try again in a few minutes."
	textLoginBusy    = "Too many logins at once. Try again in a moment."
	textShuttingDown = "This server is shutting down. Try again in a moment."
)

// textLockedOut is the NO [UNAVAILABLE] text of a locked-out login.
func textLockedOut(wait string) string {
	return fmt.Sprintf("Too many failed logins. Wait %s and try again.", wait)
}
