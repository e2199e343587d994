//lint:file-ignore ST1005 these errors are whole sentences shown as they are on the help desk's pages.

package enrollui

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/mail"
	"strings"
)

// checkNewPIN applies the PIN policy to the new PIN typed twice: the same
// both times, at least min_pin_len characters, not one digit repeated, not a
// factory default. The messages never repeat the PIN.
func (s *Server) checkNewPIN(pin, again string) error {
	switch {
	case pin == "":
		return errors.New("Type the new PIN in both fields.")
	case subtle.ConstantTimeCompare([]byte(pin), []byte(again)) != 1:
		return errors.New("The two new PINs differ. Type the new PIN twice, the same both times.")
	case len(pin) < s.cfg.MinPINLen:
		return fmt.Errorf("The new PIN is too short: use at least %d characters.", s.cfg.MinPINLen)
	case strings.Count(pin, pin[:1]) == len(pin) && pin[0] >= '0' && pin[0] <= '9':
		return errors.New("The new PIN is one digit repeated: choose one that is harder to guess.")
	}
	for _, d := range s.cfg.DefaultPINs {
		if subtle.ConstantTimeCompare([]byte(pin), []byte(d)) == 1 {
			return errors.New("The new PIN is a factory default PIN: choose another.")
		}
	}
	return nil
}

// maxMailbox is the longest mailbox address (RFC 5321's path limit less
// the angle brackets); the CA refuses longer ones, so the UI does before it
// touches the token.
const maxMailbox = 254

// checkMailbox validates the mailbox login the certificate is for.
func (s *Server) checkMailbox(user string) (string, error) {
	user = strings.TrimSpace(user)
	if user == "" {
		return "", errors.New("Type the user's mailbox, e.g. alice@example.org.")
	}
	if len(user) > maxMailbox {
		return "", fmt.Errorf("The mailbox address is %d characters long; a mailbox has at most %d. Check what was typed or pasted.", len(user), maxMailbox)
	}
	a, err := mail.ParseAddress(user)
	if err != nil || a.Address != user || a.Name != "" {
		return user, fmt.Errorf("%q is not a mailbox address: type just the address, like alice@example.org.", user)
	}
	for _, r := range user {
		if r < 0x21 || r > 0x7e {
			return user, fmt.Errorf("%q has characters a certificate cannot carry: use the plain ASCII login.", user)
		}
	}
	at := strings.LastIndexByte(user, '@')
	domain := strings.ToLower(user[at+1:])
	if !strings.Contains(domain, ".") {
		return user, fmt.Errorf("%q: the domain %q has no dot; type the full mailbox address.", user, domain)
	}
	if len(s.cfg.MailDomains) > 0 {
		for _, d := range s.cfg.MailDomains {
			if strings.EqualFold(d, domain) {
				return user, nil
			}
		}
		return user, fmt.Errorf("%q is not in this organisation's mail domains (%s).", user, strings.Join(s.cfg.MailDomains, ", "))
	}
	return user, nil
}
