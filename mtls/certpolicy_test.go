package mtls_test

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/testenv"
)

// TestHostileCertificates: certificates from the front's own CA, with a valid chain and
// dates, that the front must still refuse (each with its ALERT and log result), next to
// the good ones it must let through to the greeting. Adding a case is adding a row.
func TestHostileCertificates(t *testing.T) {
	e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1"}) // no login in this test
	alice := []string{testenv.Alice.Name}
	for _, tc := range []struct {
		name   string
		leaf   testenv.LeafOptions
		result string // empty: accepted, greeted with * OK
		bye    string
	}{
		{"good_client_auth", testenv.LeafOptions{Emails: alice}, "", ""},
		{"good_client_and_server_auth", testenv.LeafOptions{Emails: alice, EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}, "", ""},
		// Go's verifier takes a leaf without EKU as good for anything.
		{"fail_no_eku", testenv.LeafOptions{Emails: alice, EKU: []x509.ExtKeyUsage{}}, "wrong_usage", "* BYE [ALERT] This certificate is not for e-mail login"},
		{"fail_any_eku", testenv.LeafOptions{Emails: alice, EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}, "wrong_usage", "* BYE [ALERT] This certificate is not for e-mail login"},
		{"good_rsa_2048", testenv.LeafOptions{Emails: alice, Key: testenv.KeyRSA2048}, "", ""},
		{"good_ec_p384", testenv.LeafOptions{Emails: alice, Key: testenv.KeyEC384}, "", ""},
		{"fail_rsa_1024", testenv.LeafOptions{Emails: alice, Key: testenv.KeyRSA1024}, "weak_key", "* BYE [ALERT] The key of this certificate is too weak"},
		{"fail_ec_p521", testenv.LeafOptions{Emails: alice, Key: testenv.KeyEC521}, "weak_key", "* BYE [ALERT] The key of this certificate is too weak"},
		{"fail_ed25519", testenv.LeafOptions{Emails: alice, Key: testenv.KeyEd25519}, "weak_key", "* BYE [ALERT] The key of this certificate is too weak"},
		// The CA's API credentials: the role URI makes them so, whatever else they hold.
		{"fail_role_admin", testenv.LeafOptions{Emails: alice, URIs: []*url.URL{mustURL(t, "urn:imapgate:role:admin")}}, "role_certificate", "* BYE [ALERT] This is a help-desk or administrator certificate"},
		{"fail_role_enroll_cn", testenv.LeafOptions{CommonName: "bob", URIs: []*url.URL{mustURL(t, "urn:imapgate:role:enroll")}}, "role_certificate", "* BYE [ALERT] This is a help-desk or administrator certificate"},
		{"fail_role_upper_case", testenv.LeafOptions{Emails: alice, URIs: []*url.URL{mustURL(t, "URN:IMAPGATE:ROLE:admin")}}, "role_certificate", "* BYE [ALERT] This is a help-desk or administrator certificate"},
		{"good_other_uri", testenv.LeafOptions{Emails: alice, URIs: []*url.URL{mustURL(t, "https://example.org/alice")}}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaf := e.pki.Issue(t, tc.leaf)
			c := e.dial(t, leaf)
			if tc.result == "" {
				if got := c.line(); !strings.HasPrefix(got, "* OK [CAPABILITY") {
					t.Fatalf("greeting: %q", got)
				}
				return
			}
			lines := c.closed()
			if len(lines) != 1 || !strings.HasPrefix(lines[0], tc.bye) {
				t.Fatalf("got %q, want one line starting %q", lines, tc.bye)
			}
			waitForLine(t, e.logs, `"msg":"certificate refused"`, `"result":"`+tc.result+`"`, `"serial":"`+fmt.Sprintf("%02X", leaf.Cert.SerialNumber)+`"`)
		})
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
