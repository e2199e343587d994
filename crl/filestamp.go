package crl

import (
	"os"
	"time"
)

// A CRL file is polled every Interval (5 s), and reading and hashing a million-entry
// file to find it unchanged took about 15 ms of CPU a poll. So a poll first stats the
// file, and takes it for the one it read last, unchanged, without reading it, when all
// of these hold:
//
//   - device, inode, size, mtime and ctime (to the nanosecond) are those of the last
//     read, and that read's content was the current CRL's (its tag is the current
//     ETag: a file that failed to load is read, and fails, at every poll as before);
//   - the last read began at least fileSettle after the file's last change (the later
//     of mtime and ctime): on a filesystem with coarse timestamps (FAT's are 2 s) a
//     write in the same tick as the read, after it, leaves every field the same;
//   - the last read was less than fileReread ago: whatever the stat says, the file is
//     read in full that often, for what no field of it shows (a filesystem that keeps
//     no ctime, a write that put the timestamps back).
//
// A poll that stats the file unchanged confirms the CRL as a read does (Options.MaxAge).
const (
	fileSettle = 2 * time.Second
	fileReread = 60 * time.Second
)

// fileStamp is what stat tells of a file's identity and last change; ok is false where
// the platform's stat does not give all of it (then every poll reads the file).
type fileStamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // unix nanoseconds
	ok           bool
}

// fileRead is the last full read of the CRL file.
type fileRead struct {
	stamp fileStamp // fstat of the file read
	tag   string    // contentTag of what was read
	at    time.Time // when the read began
}

// unchanged reports whether a file whose stat is now may be taken for last's content,
// of tag tag, at time t (see above).
func (last fileRead) unchanged(now fileStamp, tag string, t time.Time) bool {
	if !now.ok || now != last.stamp || tag == "" || last.tag != tag {
		return false
	}
	changed := time.Unix(0, max(now.mtime, now.ctime))
	return last.at.Sub(changed) >= fileSettle && t.Sub(last.at) < fileReread
}

// statFile stats path (following symbolic links, as opening it does).
func statFile(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return stampOf(fi)
}
