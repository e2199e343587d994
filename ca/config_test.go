package ca_test

import (
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/ca"
)

// TestValidateCRLSchedule: the schedule may re-sign up to a quarter of
// renew_period late, so renew_period must leave that much of the validity.
func TestValidateCRLSchedule(t *testing.T) {
	for _, tt := range []struct {
		name                   string
		validity, renew, check time.Duration
		wantErr                string // "" = valid
	}{
		{"defaults 24h / 8h", 24 * time.Hour, 8 * time.Hour, 15 * time.Second, ""},
		{"renew at three quarters", 24 * time.Hour, 18 * time.Hour, 15 * time.Second, ""},
		{"renew just under validity", 24 * time.Hour, 23 * time.Hour, 15 * time.Second, "crl.renew_period 23h0m0s must be at most three quarters"},
		{"renew equals validity", time.Hour, time.Hour, 15 * time.Second, "crl.renew_period 1h0m0s must be at most three quarters"},
		{"renew zero", time.Hour, 0, 15 * time.Second, "crl.renew_period 0s must be positive"},
		{"check interval zero", 24 * time.Hour, 8 * time.Hour, 0, "crl.check_interval 0s must be positive"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ca.DefaultConfig()
			cfg.Name, cfg.URL = "test", "https://ca.example.org:8443"
			cfg.CRL.Validity.Duration, cfg.CRL.RenewPeriod.Duration, cfg.CRL.CheckInterval.Duration = tt.validity, tt.renew, tt.check
			err := cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate: %v, want valid", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
