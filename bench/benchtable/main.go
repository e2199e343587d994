// Command benchtable turns the JSON results of scripts/bench.sh (one file per row,
// server and round: ROW.SERVER.ROUND.json, written by imapgate-load) into the markdown
// table of docs/performance.md: the median of the rounds per cell, and the front's
// ratios against the bare Go server and nginx — each the median of the per-round
// ratios, which holds up better on a shared machine than a ratio of medians. It is a
// benchmark tool.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/imapgate/imapgate/bench/loadgen"
)

type server struct{ key, title string }

// servers in table order; the script names its result files with these keys.
// --servers replaces them (the per-protocol table: the front's gates side by side).
var servers = []server{
	{"dovecot", "Dovecot with client certs"},
	{"nginx", "nginx mail proxy"},
	{"bare", "bare Go crypto/tls server"},
	{"front", "imapgate front"},
}

func main() {
	dir := flag.String("dir", "", "directory of ROW.SERVER.ROUND.json files")
	rows := flag.String("rows", "", "row=title pairs separated by semicolons, in order")
	cols := flag.String("servers", "", "key=title pairs separated by semicolons: the columns, instead of the four servers")
	flag.StringVar(&against, "against", "", "with --servers: the key every other column is given as a ratio of")
	flag.Parse()
	if *cols != "" {
		servers = nil
		for _, spec := range strings.Split(*cols, ";") {
			k, t, _ := strings.Cut(spec, "=")
			servers = append(servers, server{k, t})
		}
	}
	if err := run(*dir, *rows); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

type cell struct {
	ok             bool
	rate, p99      float64 // medians
	errs           int     // median errors
	resumed        float64 // share of resumed handshakes, median
	kib            float64 // idle: KiB per session, median
	kibMin, kibMax float64
	rounds         int
	resumedMode    bool
	byRound        map[string]float64 // round → rate, for paired ratios
	cpu            float64            // server CPU ms per operation, median
	cpuByRound     map[string]float64
}

// against is --against: a column key, or "".
var against string

func run(dir, rowSpec string) error {
	fmt.Print(table(dir, rowSpec))
	return nil
}

// table is the markdown of the rows of rowSpec over the servers' columns.
func table(dir, rowSpec string) string {
	var b, cpu strings.Builder
	cpu.WriteString("\n| server CPU per connection (login) in ms |")
	for _, s := range servers {
		cpu.WriteString(" " + s.title + " |")
	}
	cpu.WriteString("\n| --- |" + strings.Repeat(" --- |", len(servers)) + "\n")
	cpuRows := 0
	b.WriteString("| conn/s (p99 ms) |")
	for _, s := range servers {
		b.WriteString(" " + s.title + " |")
	}
	b.WriteString("\n| --- |" + strings.Repeat(" --- |", len(servers)) + "\n")
	for _, spec := range strings.Split(rowSpec, ";") {
		row, title, _ := strings.Cut(spec, "=")
		cells := map[string]cell{}
		for _, s := range servers {
			c, err := load(dir, row, s.key)
			if err != nil {
				return "benchtable: " + err.Error() + "\n"
			}
			cells[s.key] = c
		}
		b.WriteString("| " + title + " |")
		for _, s := range servers {
			b.WriteString(" " + format(cells[s.key], s.key, cells) + " |")
		}
		b.WriteString("\n")
		if line := cpuLine(title, cells); line != "" {
			cpu.WriteString(line)
			cpuRows++
		}
	}
	if cpuRows > 0 {
		b.WriteString(cpu.String())
	}
	return b.String()
}

func load(dir, row, server string) (cell, error) {
	files, _ := filepath.Glob(filepath.Join(dir, row+"."+server+".*.json"))
	var c cell
	var rates, p99s, errs, res, kibs []float64
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return c, err
		}
		var r loadgen.Result
		if err := json.Unmarshal(data, &r); err != nil {
			return c, fmt.Errorf("%s: %w", f, err)
		}
		rates = append(rates, r.OpsPerS)
		if c.byRound == nil {
			c.byRound = map[string]float64{}
		}
		c.byRound[roundOf(f)] = r.OpsPerS
		if r.ServerCPUMsPerOp > 0 {
			if c.cpuByRound == nil {
				c.cpuByRound = map[string]float64{}
			}
			c.cpuByRound[roundOf(f)] = r.ServerCPUMsPerOp
		}
		p := r.Greeting.P99
		if r.Login != nil {
			p = r.Login.P99
		}
		p99s = append(p99s, p)
		errs = append(errs, float64(r.Errors))
		if r.Ops > 0 {
			res = append(res, float64(r.Resumed)/float64(r.Ops))
		}
		c.resumedMode = r.Mode == loadgen.Resumed
		if r.Idle != nil {
			kibs = append(kibs, r.Idle.KiBPerSession)
		}
	}
	if len(files) == 0 {
		return c, nil
	}
	c.ok, c.rounds = true, len(files)
	var cpus []float64
	for _, v := range c.cpuByRound {
		cpus = append(cpus, v)
	}
	c.cpu = median(cpus)
	c.rate, c.p99, c.errs, c.resumed = median(rates), median(p99s), int(median(errs)), median(res)
	if len(kibs) > 0 {
		c.kib = median(kibs)
		sort.Float64s(kibs)
		c.kibMin, c.kibMax = kibs[0], kibs[len(kibs)-1]
	}
	return c, nil
}

func format(c cell, server string, all map[string]cell) string {
	if !c.ok {
		return "—"
	}
	var s string
	if c.kibMax > 0 || c.kib != 0 {
		s = fmt.Sprintf("%.1f KiB/session (%.1f–%.1f)", c.kib, c.kibMin, c.kibMax)
		if server == "front" {
			if n := all["nginx"]; n.ok && n.kib > 0 {
				s += fmt.Sprintf(" = %.2f× nginx", c.kib/n.kib)
			}
		}
		return s
	}
	s = fmt.Sprintf("%.0f (%.0f)", c.rate, c.p99)
	if c.p99 < 10 {
		s = fmt.Sprintf("%.0f (%.1f)", c.rate, c.p99)
	}
	if c.errs > 0 {
		s += fmt.Sprintf(", %d errors", c.errs)
	}
	if c.resumedMode && c.resumed < 0.99 {
		s += fmt.Sprintf(", %.0f %% resumed", 100*c.resumed)
	}
	if server == "front" {
		var r []string
		if g := all["bare"]; g.ok && g.rate > 0 {
			r = append(r, fmt.Sprintf("%.2f× Go", ratio(c, g))+spread(c, g))
		}
		if n := all["nginx"]; n.ok && n.rate > 0 {
			r = append(r, fmt.Sprintf("%.2f× nginx", ratio(c, n)))
			if n.p99 > 0 {
				r = append(r, fmt.Sprintf("p99 %.2f× nginx", c.p99/n.p99))
			}
		}
		if d := all["dovecot"]; d.ok && d.rate > 0 && !all["bare"].ok {
			r = append(r, fmt.Sprintf("%.2f× Dovecot", ratio(c, d))+spread(c, d))
		}
		if len(r) > 0 {
			s += " = " + strings.Join(r, ", ")
		}
	}
	if a := all[against]; against != "" && server != against && a.ok && a.rate > 0 {
		s += fmt.Sprintf(" = %.2f×", ratio(c, a)) + spread(c, a)
		if a.p99 > 0 {
			s += fmt.Sprintf(", p99 %.2f×", c.p99/a.p99)
		}
	}
	return s
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// cpuLine is the row of the CPU table, or "" when no server's CPU was measured.
func cpuLine(title string, cells map[string]cell) string {
	var b strings.Builder
	any := false
	b.WriteString("| " + title + " |")
	for _, s := range servers {
		c := cells[s.key]
		if c.cpu <= 0 {
			b.WriteString(" — |")
			continue
		}
		any = true
		v := fmt.Sprintf("%.2f", c.cpu)
		if a := cells[against]; against != "" && s.key != against && a.cpu > 0 {
			v += fmt.Sprintf(" = %.2f×", ratio(cell{byRound: c.cpuByRound}, cell{byRound: a.cpuByRound}))
		}
		if s.key == "front" {
			for _, other := range []struct{ key, name string }{{"bare", "Go"}, {"nginx", "nginx"}} {
				if o := cells[other.key]; o.cpu > 0 {
					v += fmt.Sprintf(", %.2f× %s", ratio(cell{byRound: c.cpuByRound}, cell{byRound: o.cpuByRound}), other.name)
				}
			}
		}
		b.WriteString(" " + v + " |")
	}
	if !any {
		return ""
	}
	return b.String() + "\n"
}

// ratio is the median over rounds of a's rate over b's in the same round: the two
// ran next to each other, so a burst of other load on the machine hits both.
func ratio(a, b cell) float64 {
	var v []float64
	for r, x := range a.byRound {
		if y, ok := b.byRound[r]; ok && y > 0 {
			v = append(v, x/y)
		}
	}
	if len(v) == 0 {
		return 0
	}
	return median(v)
}

// spread is " (lowest–highest)" of the per-round ratios, to show the noise.
func spread(a, b cell) string {
	lo, hi := 0.0, 0.0
	for r, x := range a.byRound {
		if y, ok := b.byRound[r]; ok && y > 0 {
			q := x / y
			if lo == 0 || q < lo {
				lo = q
			}
			hi = max(hi, q)
		}
	}
	if lo == hi {
		return ""
	}
	return fmt.Sprintf(" (%.2f–%.2f)", lo, hi)
}

// roundOf is R of ROW.SERVER.R.json.
func roundOf(path string) string {
	parts := strings.Split(filepath.Base(path), ".")
	if len(parts) < 3 {
		return ""
	}
	return parts[len(parts)-2]
}
