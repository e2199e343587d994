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
