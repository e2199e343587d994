package loadgen

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// pids is c.PIDs and, with c.Children, their child processes (nginx's workers).
func (c *Config) pids() ([]int, error) {
	if len(c.PIDs) == 0 {
		return nil, fmt.Errorf("loadgen: idle mode needs --pid (the server's process ids)")
	}
	out := append([]int(nil), c.PIDs...)
	if !c.Children {
		return out, nil
	}
	parents := map[int]bool{}
	for _, p := range c.PIDs {
		parents[p] = true
	}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		fields := statFields(f)
		if len(fields) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		if parents[ppid] {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
			out = append(out, pid)
		}
	}
	return out, nil
}

// pss sums the Pss lines of /proc/PID/smaps_rollup, in KiB.
func pss(pids []int) (int, error) {
	total := 0
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			return 0, fmt.Errorf("loadgen: PSS of %d: %w", pid, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
				n, _ := strconv.Atoi(f[1])
				total += n
			}
		}
	}
	return total, nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times (100 on Linux everywhere).
const clockTicks = 100

// cpuSeconds sums user and system time of pids, their reaped children included
// (/proc/PID/stat fields utime, stime, cutime, cstime). A process that is gone counts 0.
func cpuSeconds(pids []int) float64 {
	var ticks int64
	for _, pid := range pids {
		// After the comm: state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17).
		f := statFields(fmt.Sprintf("/proc/%d/stat", pid))
		if len(f) < 15 {
			continue
		}
		for _, v := range f[11:15] {
			n, _ := strconv.ParseInt(v, 10, 64)
			ticks += n
		}
	}
	return float64(ticks) / clockTicks
}

// statFields are the fields of a /proc/PID/stat file after "pid (comm)", from state on;
// nil if it cannot be read. comm may hold blanks, so the split is after the last ')'.
func statFields(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}
