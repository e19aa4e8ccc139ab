package layers

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/imgrun/imgrun/pkg/registry"
)

// GCReport says what GC removed.
type GCReport struct {
	Blobs      int   // blobs removed
	Kept       int   // blobs kept (reachable from index.json)
	BytesFreed int64 // bytes of removed blobs, partial downloads and temporary files
}

// GC removes every blob no index.json entry reaches (through its manifest, config and
// layers, and the index its tag pointed to with the index's children that are present),
// every partial download and every temporary tree under tmp/. It holds gc.lock exclusively,
// so it waits for running pulls (and other Hold holders) and they wait for it.
func (s *Store) GC(ctx context.Context) (GCReport, error) {
	var rep GCReport
	l, err := s.lockFile(ctx, gcLockName, unix.LOCK_EX)
	if err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	defer l.Unlock()

	keep, err := s.reachable(ctx)
	if err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	entries, err := os.ReadDir(s.blobs)
	if err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if keep[digest.NewDigestFromEncoded(digest.SHA256, e.Name())] {
			rep.Kept++
			continue
		}
		n, err := removeAll(filepath.Join(s.blobs, e.Name()))
		if err != nil {
			return rep, fmt.Errorf("gc: %w", err)
		}
		rep.Blobs++
		rep.BytesFreed += n
	}
	if err := syncDir(s.blobs); err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	// Nobody else holds gc.lock, so no download, lock or tree under construction is in use.
	for _, dir := range []string{s.ingest, s.tmp, s.locks} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return rep, fmt.Errorf("gc: %w", err)
		}
		for _, e := range entries {
			if dir == s.locks && !strings.HasPrefix(e.Name(), "blob-") {
				continue // gc.lock, index.lock and other packages' locks stay
			}
			n, err := removeAll(filepath.Join(dir, e.Name()))
			if err != nil {
				return rep, fmt.Errorf("gc: %w", err)
			}
			rep.BytesFreed += n
		}
	}
	return rep, nil
}

// reachable marks every blob index.json reaches.
func (s *Store) reachable(ctx context.Context) (map[digest.Digest]bool, error) {
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	keep := make(map[digest.Digest]bool)
	for _, d := range idx.Manifests {
		s.mark(ctx, d.Digest, keep, 0)
		if id := digest.Digest(d.Annotations[AnnotationIndex]); id != "" {
			s.mark(ctx, id, keep, 0)
		}
	}
	return keep, nil
}

// document is the part of a manifest or index that references other blobs.
type document struct {
	Config    *ocispec.Descriptor  `json:"config,omitempty"`
	Layers    []ocispec.Descriptor `json:"layers,omitempty"`
	Manifests []ocispec.Descriptor `json:"manifests,omitempty"`
}

// mark keeps d (a manifest or index) and what it references, when present.
func (s *Store) mark(ctx context.Context, d digest.Digest, keep map[digest.Digest]bool, depth int) {
	if depth > 4 || keep[d] || !s.Has(d) {
		return
	}
	data, err := s.ReadBlob(ctx, d, registry.MaxManifestSize)
	if err != nil {
		return // corrupt (ReadBlob removed it) or unreadable: nothing to keep
	}
	keep[d] = true
	var doc document
	if json.Unmarshal(data, &doc) != nil {
		return
	}
	if doc.Config != nil {
		keep[doc.Config.Digest] = true
	}
	for _, l := range doc.Layers {
		keep[l.Digest] = true
	}
	for _, m := range doc.Manifests {
		s.mark(ctx, m.Digest, keep, depth+1)
	}
}

// removeAll removes path (a file or a tree) and returns the bytes its files held.
func removeAll(path string) (int64, error) {
	var n int64
	filepath.WalkDir(path, func(_ string, e os.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	if err := os.RemoveAll(path); err != nil {
		return n, err
	}
	return n, nil
}
