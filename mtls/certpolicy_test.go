package mtls_test

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/imapgate/imapgate/testenv"
)

// certFixture is a certificate to issue from the front's own CA, read from
// testdata/certs/*.yaml: its names, EKU, key and URIs, and for fail_* what the front
// must answer (the start of the BYE) and log (the result).
type certFixture struct {
	Emails []string  `yaml:"emails"`
	CN     string    `yaml:"cn"`
	EKU    *[]string `yaml:"eku"` // absent: clientAuth; empty: no EKU at all
	Key    string    `yaml:"key"`
	URIs   []string  `yaml:"uris"`
	Result string    `yaml:"result"`
	BYE    string    `yaml:"bye"`
}

var (
	fixtureEKUs = map[string]x509.ExtKeyUsage{"clientAuth": x509.ExtKeyUsageClientAuth, "serverAuth": x509.ExtKeyUsageServerAuth, "any": x509.ExtKeyUsageAny}
	fixtureKeys = map[string]testenv.KeyType{"": testenv.KeyEC256, "ec256": testenv.KeyEC256, "ec384": testenv.KeyEC384, "ec521": testenv.KeyEC521,
		"rsa1024": testenv.KeyRSA1024, "rsa2048": testenv.KeyRSA2048, "ed25519": testenv.KeyEd25519}
)

func (f *certFixture) leafOptions(t *testing.T) testenv.LeafOptions {
	t.Helper()
	o := testenv.LeafOptions{Emails: f.Emails, CommonName: f.CN}
	key, ok := fixtureKeys[f.Key]
	if !ok {
		t.Fatalf("unknown key %q", f.Key)
	}
	o.Key = key
	if f.EKU != nil {
		o.EKU = []x509.ExtKeyUsage{}
		for _, name := range *f.EKU {
			eku, ok := fixtureEKUs[name]
			if !ok {
				t.Fatalf("unknown eku %q", name)
			}
			o.EKU = append(o.EKU, eku)
		}
	}
	for _, s := range f.URIs {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		o.URIs = append(o.URIs, u)
	}
	return o
}

// TestHostileCertificates: certificates from the front's own CA, with a valid chain
// and dates, that the front must still refuse (fail_*: no clientAuth EKU, a weak key,
// a role URI), each with its ALERT and log result, next to the good ones it lets
// through to the greeting (good_*). Adding a case is adding a file.
func TestHostileCertificates(t *testing.T) {
	files, err := filepath.Glob("testdata/certs/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no certificate fixtures: %v", err)
	}
	e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1"}) // no login in this test
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var f certFixture
			if err := yaml.Unmarshal(data, &f); err != nil {
				t.Fatal(err)
			}
			switch {
			case strings.HasPrefix(name, "good_") && f.Result == "":
			case strings.HasPrefix(name, "fail_") && f.Result != "" && f.BYE != "":
			default:
				t.Fatal("good_* fixtures have no result; fail_* have a result and a bye")
			}
			leaf := e.pki.Issue(t, f.leafOptions(t))
			c := e.dial(t, leaf)
			if f.Result == "" {
				if got := c.line(); !strings.HasPrefix(got, "* OK [CAPABILITY") {
					t.Fatalf("greeting: %q", got)
				}
				return
			}
			lines := c.closed()
			if len(lines) != 1 || !strings.HasPrefix(lines[0], f.BYE) {
				t.Fatalf("got %q, want one line starting %q", lines, f.BYE)
			}
			waitForLine(t, e.logs, `"msg":"certificate refused"`, `"result":"`+f.Result+`"`, `"serial":"`+fmt.Sprintf("%02X", leaf.Cert.SerialNumber)+`"`)
		})
	}
}
