package main

import "testing"

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
