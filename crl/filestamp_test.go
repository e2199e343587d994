package crl

import (
	"testing"
	"time"
)

// TestFileReadUnchanged holds the stat shortcut to its rules, timestamps as coarse as
// they come included: only a stamp equal in every field, of the current CRL's content,
// read well after the file's last change and not too long ago, skips the read.
func TestFileReadUnchanged(t *testing.T) {
	changed := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	stamp := fileStamp{dev: 1, ino: 2, size: 3000, mtime: changed.UnixNano(), ctime: changed.UnixNano(), ok: true}
	with := func(edit func(*fileStamp)) fileStamp {
		s := stamp
		edit(&s)
		return s
	}
	readAt := changed.Add(fileSettle)
	last := fileRead{stamp: stamp, tag: `"t"`, at: readAt}
	for _, tc := range []struct {
		name string
		last fileRead
		now  fileStamp
		tag  string
		at   time.Time
		want bool
	}{
		{"same stamp, read settled", last, stamp, `"t"`, readAt.Add(5 * time.Second), true},
		{"just under the full re-read", last, stamp, `"t"`, readAt.Add(fileReread - time.Nanosecond), true},
		{"full re-read due", last, stamp, `"t"`, readAt.Add(fileReread), false},
		{"read in the change's tick", fileRead{stamp: stamp, tag: `"t"`, at: changed.Add(fileSettle - time.Nanosecond)}, stamp, `"t"`, readAt.Add(5 * time.Second), false},
		{"ctime later than mtime (timestamps put back)", last, with(func(s *fileStamp) { s.ctime = readAt.UnixNano() }), `"t"`, readAt.Add(5 * time.Second), false},
		{"other inode (replaced by rename)", last, with(func(s *fileStamp) { s.ino++ }), `"t"`, readAt.Add(5 * time.Second), false},
		{"other device", last, with(func(s *fileStamp) { s.dev++ }), `"t"`, readAt.Add(5 * time.Second), false},
		{"other size", last, with(func(s *fileStamp) { s.size++ }), `"t"`, readAt.Add(5 * time.Second), false},
		{"mtime a nanosecond on", last, with(func(s *fileStamp) { s.mtime++ }), `"t"`, readAt.Add(5 * time.Second), false},
		{"ctime a nanosecond on", last, with(func(s *fileStamp) { s.ctime++ }), `"t"`, readAt.Add(5 * time.Second), false},
		{"stat failed or unsupported", last, fileStamp{}, `"t"`, readAt.Add(5 * time.Second), false},
		{"no read yet", fileRead{}, fileStamp{}, "", readAt, false},
		{"last read is not the current CRL", last, stamp, `"other"`, readAt.Add(5 * time.Second), false},
		{"no current CRL", fileRead{stamp: stamp, at: readAt}, stamp, "", readAt.Add(5 * time.Second), false},
	} {
		if got := tc.last.unchanged(tc.now, tc.tag, tc.at); got != tc.want {
			t.Errorf("%s: unchanged = %v, want %v", tc.name, got, tc.want)
		}
	}
}
