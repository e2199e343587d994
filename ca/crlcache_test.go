package ca

import (
	"bytes"
	"testing"
)

// TestCRLCacheFollowsTheDatabase: the cached CRL is used only while the metadata
// row names it; a row that disagrees with the stored CRL (a moment between two
// writes, or another node's) never makes the CA serve a CRL under a wrong ETag.
func TestCRLCacheFollowsTheDatabase(t *testing.T) {
	c := benchCA(t)
	first, err := c.CRL()
	if err != nil {
		t.Fatal(err)
	}
	again, _ := c.CRL()
	if again != first {
		t.Error("an unchanged CRL was read from the database again instead of the cache")
	}
	// Another node signs a new CRL: the row changes, the cache is dropped.
	if err := c.RegenerateCRL(); err != nil {
		t.Fatal(err)
	}
	// The node that signed it caches what it signed, without reading it back.
	cached := c.crlCache.Load()
	second, _ := c.CRL()
	if second.Number <= first.Number || second.ETag == first.ETag {
		t.Fatalf("after re-signing: number %d etag %s, before %d %s", second.Number, second.ETag, first.Number, first.ETag)
	}
	if cached != second {
		t.Errorf("after signing CRL %d the cache held CRL %d", second.Number, cached.Number)
	}
	// A row that names some other CRL: serve the stored one with its own ETag, uncached.
	if err := c.db.Set(crlMetaTable, crlMetaKey, []byte(`{"number":999,"etag":"\"bogus\""}`)); err != nil {
		t.Fatal(err)
	}
	got, _ := c.CRL()
	if got.ETag != etagOf(got.DER) || !bytes.Equal(got.DER, second.DER) {
		t.Fatalf("served ETag %s for a CRL whose hash is %s", got.ETag, etagOf(got.DER))
	}
	if c.crlCache.Load().ETag == `"bogus"` {
		t.Fatal("cached under the row's ETag")
	}
}
