package layers

import (
	"fmt"
	"os"
	"sync"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestPutRecord(t *testing.T) {
	s := newStore(t)
	arm := ocispec.Platform{OS: "linux", Architecture: "arm64"}
	m := func(b string) ocispec.Descriptor { return descOf(ocispec.MediaTypeImageManifest, []byte(b)) }
	// An entry another tool wrote (no reference name) must survive our updates.
	if err := s.updateIndex(t.Context(), func(idx *ocispec.Index) (bool, error) {
		idx.Manifests = append(idx.Manifests, m("foreign"))
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	steps := []Record{
		{Ref: "r:1", Platform: amd64, Descriptor: m("a")},
		{Ref: "r:1", Platform: arm, Descriptor: m("b")},
		{Ref: "r:1", Platform: amd64, Descriptor: m("c"), Index: m("i").Digest}, // replaces a
		{Ref: "r:2", Platform: amd64, Descriptor: m("c")},
	}
	for _, r := range steps {
		if err := s.putRecord(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := s.Images(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, fmt.Sprintf("%s %s %s %v", r.Ref, r.Platform.Architecture, r.Descriptor.Digest, r.Index != ""))
	}
	want := []string{
		fmt.Sprintf("r:1 arm64 %s false", m("b").Digest),
		fmt.Sprintf("r:1 amd64 %s true", m("c").Digest),
		fmt.Sprintf("r:2 amd64 %s false", m("c").Digest),
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("records:\n%v\nwant\n%v", got, want)
	}
	idx, _ := s.readIndex()
	if len(idx.Manifests) != 4 || idx.Manifests[0].Digest != m("foreign").Digest {
		t.Errorf("foreign entry lost: %+v", idx.Manifests)
	}
	// The same record again does not rewrite index.json.
	before, _ := os.Stat(s.indexPath())
	if err := s.putRecord(t.Context(), steps[3]); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(s.indexPath()); !os.SameFile(before, after) {
		t.Error("index.json rewritten for an unchanged record")
	}
}

// TestPutRecordConcurrent: concurrent writers (separate Store values, like separate
// processes) never lose each other's entries.
func TestPutRecordConcurrent(t *testing.T) {
	root := newStore(t).Root()
	const n = 16
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, err := Open(root)
			if err == nil {
				err = s.putRecord(t.Context(), Record{Ref: fmt.Sprint("r:", i), Platform: amd64,
					Descriptor: descOf(ocispec.MediaTypeImageManifest, []byte{byte(i)})})
			}
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	s, _ := Open(root)
	if recs, err := s.Images(t.Context()); err != nil || len(recs) != n {
		t.Errorf("%d records, want %d: %v", len(recs), n, err)
	}
}
