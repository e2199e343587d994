package ca

import "testing"

// TestListenAddrDefault: without listen, the API serves this host only, on the
// port of its URL; listen in ca.yaml (or --listen) is taken as given.
func TestListenAddrDefault(t *testing.T) {
	for _, tc := range []struct{ url, listen, want string }{
		{"https://ca.example.org:8443", "", "127.0.0.1:8443"},
		{"https://ca.example.org", "", "127.0.0.1:443"},
		{"https://ca.example.org:8443", ":8443", ":8443"},
		{"https://ca.example.org:8443", "10.0.0.3:9443", "10.0.0.3:9443"},
		{"::bad", "", "127.0.0.1:8443"},
	} {
		c := &Config{URL: tc.url, Listen: tc.listen}
		if got := c.ListenAddr(); got != tc.want {
			t.Errorf("url %q listen %q: ListenAddr %q, want %q", tc.url, tc.listen, got, tc.want)
		}
	}
}
