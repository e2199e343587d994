package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// buckets prints, for every "crl loaded" line of the front's log that falls in the
// load generator's measured window, the 1 s buckets from the one its poll began in
// (the line's time less its load_ms) to the one after the line, and each one's ratio to
// the window's median: the dip a reload leaves, read from the buckets its own log line
// names rather than from where the script meant it to be, and each one's ratio to the
// median of the 8 buckets before the reload. A paced reload (crl/pace.go) spans a
// second or two.
func buckets(resultFile, logFile string) error {
	const before = 8
	b, err := os.ReadFile(resultFile)
	if err != nil {
		return err
	}
	var res struct {
		PerSecond    []int  `json:"per_second"`
		MeasuredFrom string `json:"measured_from"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("%s: %w", resultFile, err)
	}
	from, err := time.Parse(time.RFC3339Nano, res.MeasuredFrom)
	if err != nil || len(res.PerSecond) < 3 {
		return fmt.Errorf("%s: no measured_from or fewer than 3 buckets: run the load generator with --duration of 3 s or more", resultFile)
	}
	sorted := slices.Clone(res.PerSecond)
	slices.Sort(sorted)
	median := float64(sorted[len(sorted)/2])
	f, err := os.Open(logFile)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Printf("| reload | entries | load | buckets | handshakes/s in them (× window median %.0f; × median of the %d buckets before) |\n| --- | --- | --- | --- | --- |\n", median, before)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if !strings.Contains(sc.Text(), `"crl loaded"`) {
			continue
		}
		var l struct {
			Time    time.Time `json:"time"`
			Entries int       `json:"entries"`
			Reused  bool      `json:"entries_reused"`
			LoadMS  int64     `json:"load_ms"`
			PacedMS int64     `json:"paced_ms"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		k := int(l.Time.Sub(from) / time.Second)
		if l.Time.Before(from) || k >= len(res.PerSecond) {
			continue
		}
		first := max(int(l.Time.Add(-time.Duration(l.LoadMS)*time.Millisecond).Sub(from)/time.Second), 0)
		kind := "new entries"
		if l.Reused {
			kind = "re-signed, same entries"
		}
		// The rate drifts over a long window when the host's load changes; the buckets
		// just before the reload are the nearer reference.
		local := median
		if first >= 3 {
			prior := slices.Clone(res.PerSecond[max(first-before, 0):first])
			slices.Sort(prior)
			local = float64(prior[len(prior)/2])
		}
		var cells []string
		for i := first; i < min(k+2, len(res.PerSecond)); i++ {
			r := float64(res.PerSecond[i])
			cells = append(cells, fmt.Sprintf("%d (%.2f×; %.2f×)", res.PerSecond[i], r/median, r/local))
		}
		fmt.Printf("| %s | %d | %d ms (%d ms paced) | %d–%d | %s |\n", kind, l.Entries, l.LoadMS, l.PacedMS, first, k+1, strings.Join(cells, ", "))
	}
	// Lowest and highest bucket of the window: how far buckets stray with no reload.
	fmt.Printf("\nwindow: %d buckets, lowest %.2f×, highest %.2f× the median\n", len(res.PerSecond),
		float64(sorted[0])/median, float64(sorted[len(sorted)-1])/median)
	return sc.Err()
}
