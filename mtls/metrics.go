package mtls

import (
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the front's Prometheus metrics, in their own registry so that several
// fronts (tests, imapgate serve) do not collide.
type Metrics struct {
	Registry *prometheus.Registry

	handshakes      *prometheus.CounterVec
	handshakeBy     map[string]prometheus.Counter // handshakes' counters, looked up once (handshake)
	logins          *prometheus.CounterVec
	active          prometheus.Gauge
	revokedSessions prometheus.Counter
	// crlUnavailableSessions counts sessions ended because their CA's CRL went stale
	// or lost its source.
	crlUnavailableSessions prometheus.Counter
	backendDial            prometheus.Histogram
	backendLogin           prometheus.Histogram
}

// NewMetrics registers the front's metrics (and the Go runtime's) in a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imapgate_front_handshakes_total",
			Help: "TLS handshakes and certificate checks by result (" + strings.Join(handshakeResults, ", ") + ").",
		}, []string{"result"}),
		handshakeBy: map[string]prometheus.Counter{},
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imapgate_front_logins_total",
			Help: "Login decisions by result (ok, bad_password, identity_mismatch, password_too_long, repeated, backend_refused, locked, busy, too_many, backend_error).",
		}, []string{"result"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imapgate_front_sessions_active",
			Help: "Open client connections, pre-auth and proxied.",
		}),
		revokedSessions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imapgate_front_sessions_revoked_total",
			Help: "Live sessions ended because a new CRL listed their certificate.",
		}),
		crlUnavailableSessions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imapgate_front_sessions_crl_unavailable_total",
			Help: "Live sessions ended because the CRL of their CA went stale, or a reload removed its CRL source.",
		}),
		backendDial: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "imapgate_front_backend_dial_seconds",
			Help:    "Time to connect to the IMAP backend and read its greeting.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		backendLogin: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "imapgate_front_backend_login_seconds",
			Help:    "Time for ID and LOGIN at the IMAP backend.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
	for _, r := range handshakeResults {
		m.handshakeBy[r] = m.handshakes.WithLabelValues(r)
	}
	m.Registry.MustRegister(m.handshakes, m.logins, m.active, m.revokedSessions, m.crlUnavailableSessions, m.backendDial, m.backendLogin,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// handshakeResults are the result labels of imapgate_front_handshakes_total.
var handshakeResults = []string{"ok", "no_cert", "untrusted", "expired", "not_yet_valid", "wrong_usage", "weak_key",
	"role_certificate", "revoked", "crl_unavailable", "invalid", "tls_error", "timeout", "limited"}

// handshake is the handshake counter of result. The counters are looked up once, in
// NewMetrics: WithLabelValues hashes the label and takes the vector's lock on every
// call, once per connection (0.25 % of a handshake's CPU).
func (m *Metrics) handshake(result string) prometheus.Counter {
	if c, ok := m.handshakeBy[result]; ok {
		return c
	}
	return m.handshakes.WithLabelValues(result)
}

// observeServer adds the CRL gauges, read from s's current state at scrape time.
func (m *Metrics) observeServer(s *Server) {
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imapgate_front_crl_age_seconds",
			Help: "Seconds since the oldest CRL in use was last confirmed by a poll (large = the CA is unreachable).",
		}, func() float64 {
			var age float64
			for _, st := range s.st.Load().opts.CRLs {
				t := st.ConfirmedAt()
				if t.IsZero() {
					return -1
				}
				age = max(age, time.Since(t).Seconds())
			}
			return age
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imapgate_front_crl_number",
			Help: "CRL number of the first CRL in use (-1 before one is loaded).",
		}, func() float64 {
			crls := s.st.Load().opts.CRLs
			if len(crls) == 0 || crls[0].Load() == nil || crls[0].Load().Number == nil {
				return -1
			}
			f, _ := new(big.Float).SetInt(crls[0].Load().Number).Float64()
			return f
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imapgate_front_crls_stale",
			Help: "CRLs in use that are stale now (past nextUpdate plus grace, or max_age): their CA's certificates are refused.",
		}, func() float64 {
			n, now := 0, time.Now()
			for _, st := range s.st.Load().opts.CRLs {
				if _, err := st.Fresh(now); err != nil {
					n++
				}
			}
			return float64(n)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imapgate_front_sessions_preauth",
			Help: "Open connections not logged in (yet); at most limits.preauth_share of max_connections.",
		}, func() float64 { return float64(s.conns.preauth.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imapgate_front_certificate_expiry_timestamp_seconds",
			Help: "When the front's own server certificate expires (Unix time; the earliest of several). Alert well before: mail programs refuse an expired one.",
		}, func() float64 {
			t := frontCertExpiry(s.st.Load().opts.Certificates)
			if t.IsZero() {
				return 0
			}
			return float64(t.Unix())
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imapgate_front_crl_entries",
			Help: "Revoked serials in all CRLs in use.",
		}, func() float64 {
			n := 0
			for _, st := range s.st.Load().opts.CRLs {
				n += st.Load().Len()
			}
			return float64(n)
		}),
	)
}

// Handler serves the metrics for a scraper.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
