package ca

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// serverIntake is POST /api/v1/server up to the signing: the body, the
// names and the CSR against them.
func serverIntake(body []byte) error {
	req, err := parseServerRequest(bytes.NewReader(body))
	if err != nil {
		return err
	}
	dns, ips, err := normalizeServerNames(req.DNS, req.IP)
	if err != nil {
		return err
	}
	_, err = checkServerCSR(req.CSR, dns, ips)
	return err
}

// fixtureWants are the words a fail_ fixture's refusal must contain, so it
// fails for its own reason and not an earlier one.
var fixtureWants = map[string]string{
	"fail_othername_upn.json":              "otherName",
	"fail_basic_constraints_ca.json":       "CA:TRUE",
	"fail_unknown_critical_extension.json": "1.2.3.4.5",
	"fail_extra_dns.json":                  "bank.example.com",
	"fail_missing_dns.json":                "imap.example.org",
	"fail_extra_ip.json":                   "192.0.2.10",
	"fail_cn_not_requested.json":           "common name",
	"fail_too_many_names.json":             "at most 32",
	"fail_ip_as_dns_name.json":             "is an IP address",
}

// runFixtures checks testdata/DIR: good_* pass check, fail_* are refused as
// bad requests (with fixtureWants' words).
func runFixtures(t *testing.T, dir string, check func([]byte) error) {
	files, _ := filepath.Glob(filepath.Join("testdata", dir, "*.json"))
	if len(files) == 0 {
		t.Fatalf("no fixtures in testdata/%s", dir)
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			err = check(b)
			switch {
			case strings.HasPrefix(name, "good_") && err != nil:
				t.Fatalf("refused: %v", err)
			case strings.HasPrefix(name, "fail_") && err == nil:
				t.Fatal("accepted")
			case err != nil && !errors.Is(err, ErrBadRequest):
				t.Fatalf("not a bad request: %v", err)
			case err != nil && !strings.Contains(err.Error(), fixtureWants[name]):
				t.Fatalf("refused for another reason: %v (want %q)", err, fixtureWants[name])
			}
		})
	}
}

func TestServerIntakeFixtures(t *testing.T) { runFixtures(t, "server", serverIntake) }

// FuzzServerIntake: whatever the body, the server intake never panics and
// refuses only with a bad-request error.
func FuzzServerIntake(f *testing.F) {
	files, _ := filepath.Glob("testdata/server/*.json")
	for _, file := range files {
		b, _ := os.ReadFile(file)
		f.Add(b)
	}
	f.Add([]byte(`{"csr":"","dns":["a"],"ip":["::"]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if err := serverIntake(body); err != nil && !errors.Is(err, ErrBadRequest) {
			t.Fatalf("server intake error is not a bad request: %v", err)
		}
	})
}

// FuzzReportIntake: a reported audit entry that passes the check holds no
// control character and no CA action name.
func FuzzReportIntake(f *testing.F) {
	f.Add([]byte(`{"action":"pin-change","user":"alice@example.org","serial":"0A","token_serial":"b125","result":"ok","reason":"user forgot"}`))
	f.Add([]byte(`{"action":"revoke"}`))
	f.Add([]byte(`{"action":"wipe","reason":"a\nb"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var r ReportRequest
		if decode(bytes.NewReader(body), &r) != nil {
			return
		}
		e, err := checkReport(r)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("not a bad request: %v", err)
			}
			return
		}
		b, _ := json.Marshal(e)
		for _, s := range []string{e.Action, e.User, e.Serial, e.TokenSerial, e.Reason} {
			if strings.ContainsAny(s, "\n\r\x00\x1b") {
				t.Fatalf("accepted a control character: %s", b)
			}
		}
		if strings.HasPrefix(e.Action, "issue") || strings.HasPrefix(e.Action, "revoke") || !e.Reported {
			t.Fatalf("accepted a CA action or an unmarked entry: %s", b)
		}
	})
}

// TestReportLimits: the reported entry's field limits.
func TestReportLimits(t *testing.T) {
	for _, tt := range []struct {
		r  ReportRequest
		ok bool
	}{
		{ReportRequest{Action: "wipe", Reason: strings.Repeat("x", 256)}, true},
		{ReportRequest{Action: "wipe", Reason: strings.Repeat("x", 257)}, false},
		{ReportRequest{Action: "wipe", TokenSerial: strings.Repeat("0", 65)}, false},
		{ReportRequest{Action: strings.Repeat("a", 40)}, true},
		{ReportRequest{Action: strings.Repeat("a", 41)}, false},
		{ReportRequest{Action: "record-x"}, false},
		{ReportRequest{Action: "wipe", Reason: "\u0085"}, false},
	} {
		if _, err := checkReport(tt.r); (err == nil) != tt.ok {
			t.Errorf("checkReport(%.50v) = %v, want ok=%v", tt.r, err, tt.ok)
		}
	}
}
