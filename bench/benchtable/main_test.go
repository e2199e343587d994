package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMedianAndRatio(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []float64
		want float64
	}{
		{"good_odd", []float64{3, 1, 2}, 2},
		{"good_even", []float64{4, 1, 3, 2}, 2.5},
		{"good_empty", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := median(tc.in); got != tc.want {
				t.Fatalf("median(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
	front := cell{byRound: map[string]float64{"1": 100, "2": 300, "3": 90}}
	bare := cell{byRound: map[string]float64{"1": 100, "2": 100, "3": 100, "4": 50}}
	if got := ratio(front, bare); got != 1 { // per-round 1, 3, 0.9: median 1; round 4 has no pair
		t.Fatalf("ratio = %v, want 1", got)
	}
	if got := spread(front, bare); got != " (0.90–3.00)" {
		t.Fatalf("spread = %q", got)
	}
	if got := roundOf("/x/full32.front.3.json"); got != "3" {
		t.Fatalf("roundOf = %q, want 3", got)
	}
}

// TestAgainst: with --servers and --against, every other column is a ratio of the
// chosen one, round by round (the per-protocol table).
func TestAgainst(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for r, v := range map[string][2]string{"1": {"100", "50"}, "2": {"200", "120"}, "3": {"150", "75"}} {
		write("proto4.gimap."+r+".json", `{"ops_per_s": `+v[0]+`, "ops": 10, "greeting_ms": {"p99": 10}, "server_cpu_ms_per_op": 1}`)
		write("proto4.gsmtp."+r+".json", `{"ops_per_s": `+v[1]+`, "ops": 10, "greeting_ms": {"p99": 20}, "server_cpu_ms_per_op": 2}`)
	}
	servers = []server{{"gimap", "IMAP gate"}, {"gsmtp", "SMTP gate"}}
	against = "gimap"
	defer func() { against = "" }()
	got := table(dir, "proto4=handshakes, 4 at once")
	for _, want := range []string{
		"| conn/s (p99 ms) | IMAP gate | SMTP gate |",
		"| handshakes, 4 at once | 150 (10) | 75 (20) = 0.50× (0.50–0.60), p99 2.00× |",
		"| handshakes, 4 at once | 1.00 | 2.00 = 2.00× |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}
