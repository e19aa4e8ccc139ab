package layers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/imgrun/imgrun/pkg/registry"
)

// Annotations imgrun puts on its index.json entries (besides ocispec.AnnotationRefName,
// the full normalized reference).
const (
	AnnotationPlatform = "io.imgrun.platform"     // linux/amd64
	AnnotationIndex    = "io.imgrun.index.digest" // the index the tag pointed to, if any
)

// maxIndexSize bounds index.json: a few thousand images fit in a few MiB.
const maxIndexSize = 64 << 20

// Record is one cached image: an index.json entry.
type Record struct {
	Ref        string             // full normalized reference (index.docker.io/library/node:latest)
	Platform   ocispec.Platform   // the platform it was pulled for
	Descriptor ocispec.Descriptor // the platform manifest, as written to index.json
	Index      digest.Digest      // the index the tag pointed to, "" when it named a manifest
}

func (s *Store) indexPath() string { return filepath.Join(s.layout, "index.json") }

// readIndex parses index.json. It is replaced only by rename, so no lock is needed to read
// a consistent version.
func (s *Store) readIndex() (*ocispec.Index, error) {
	f, err := os.OpenFile(s.indexPath(), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("read index.json: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxIndexSize+1))
	if err != nil {
		return nil, fmt.Errorf("read index.json: %w", err)
	}
	if len(data) > maxIndexSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", s.indexPath(), maxIndexSize)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("parse %s: %w", s.indexPath(), err)
	}
	return &idx, nil
}

func (s *Store) writeIndex(idx *ocispec.Index) error {
	if idx.Manifests == nil {
		idx.Manifests = []ocispec.Descriptor{}
	}
	data, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(s.indexPath(), append(data, '\n'), 0o644)
}

// updateIndex runs a read-modify-write of index.json under locks/index.lock; fn edits the
// index in place and says whether it changed it (else nothing is written). Two processes
// never lose each other's entries.
func (s *Store) updateIndex(ctx context.Context, fn func(*ocispec.Index) (bool, error)) error {
	l, err := s.lockFile(ctx, indexLockName, unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer l.Unlock()
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	changed, err := fn(idx)
	if err != nil || !changed {
		return err
	}
	return s.writeIndex(idx)
}

// recordOf turns an index.json entry into a Record; ok is false for entries imgrun did not
// write (no reference name).
func recordOf(d ocispec.Descriptor) (Record, bool) {
	ref := d.Annotations[ocispec.AnnotationRefName]
	if ref == "" {
		return Record{}, false
	}
	r := Record{Ref: ref, Descriptor: d, Index: digest.Digest(d.Annotations[AnnotationIndex])}
	if ps := d.Annotations[AnnotationPlatform]; ps != "" {
		if p, err := registry.ParsePlatform(ps); err == nil {
			r.Platform = p
		}
	} else if d.Platform != nil {
		r.Platform = *d.Platform
	}
	return r, true
}

// entryOf is the index.json entry for a record.
func entryOf(r Record) ocispec.Descriptor {
	d := ocispec.Descriptor{
		MediaType: r.Descriptor.MediaType,
		Digest:    r.Descriptor.Digest,
		Size:      r.Descriptor.Size,
		Platform:  &r.Platform,
		Annotations: map[string]string{
			ocispec.AnnotationRefName: r.Ref,
			AnnotationPlatform:        platformKey(r.Platform),
		},
	}
	if r.Index != "" {
		d.Annotations[AnnotationIndex] = r.Index.String()
	}
	return d
}

// samePlatform compares platforms after normalization (arm64/v8 is arm64, x86_64 is amd64).
func samePlatform(a, b ocispec.Platform) bool {
	return platformKey(a) == platformKey(b)
}

func platformKey(p ocispec.Platform) string {
	s := registry.FormatPlatform(p)
	if n, err := registry.ParsePlatform(s); err == nil {
		return registry.FormatPlatform(n)
	}
	return s
}

// putRecord adds r to index.json, replacing an older entry for the same (ref, platform).
func (s *Store) putRecord(ctx context.Context, r Record) error {
	entry := entryOf(r)
	return s.updateIndex(ctx, func(idx *ocispec.Index) (bool, error) {
		hits, same := 0, false
		idx.Manifests = slices.DeleteFunc(idx.Manifests, func(d ocispec.Descriptor) bool {
			old, ok := recordOf(d)
			hit := ok && old.Ref == r.Ref && samePlatform(old.Platform, r.Platform)
			if hit {
				hits++
				same = d.Digest == entry.Digest && d.Annotations[AnnotationIndex] == entry.Annotations[AnnotationIndex]
			}
			return hit
		})
		idx.Manifests = append(idx.Manifests, entry)
		// A pull of an unchanged image leaves index.json alone (no rewrite, no fsync).
		return hits != 1 || !same, nil
	})
}

// Images lists the cached images, in index.json order.
func (s *Store) Images(ctx context.Context) ([]Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, d := range idx.Manifests {
		if r, ok := recordOf(d); ok {
			out = append(out, r)
		}
	}
	return out, nil
}

// Lookup finds the cached image for (ref, platform) in index.json, without any network
// request. It returns ErrNotCached when there is none. The blobs are not checked here;
// Load does that.
func (s *Store) Lookup(ctx context.Context, ref registry.Reference, platform ocispec.Platform) (Record, error) {
	recs, err := s.Images(ctx)
	if err != nil {
		return Record{}, err
	}
	want := ref.String()
	// A zero platform means "the host's, or whatever single platform was pulled":
	// prefer the host's record, then take the newest one for ref.
	strict := platform.OS != ""
	if !strict {
		platform = registry.HostPlatform()
	}
	var fallback *Record
	for _, r := range slices.Backward(recs) {
		if !lookupMatches(r, ref, want) {
			continue
		}
		if samePlatform(r.Platform, platform) {
			return r, nil
		}
		if !strict && fallback == nil {
			fallback = &r
		}
	}
	if fallback != nil {
		return *fallback, nil
	}
	return Record{}, fmt.Errorf("%s (%s): %w", want, platformKey(platform), ErrNotCached)
}

// lookupMatches tells whether r is the image ref names. A reference pinned by digest
// matches an image pulled under any tag of the same repository whose manifest or index
// has that digest, so `NAME@sha256:…` printed by pull finds the cached image.
func lookupMatches(r Record, ref registry.Reference, want string) bool {
	if r.Ref == want {
		return true
	}
	if ref.Digest == "" || (r.Descriptor.Digest != ref.Digest && r.Index != ref.Digest) {
		return false
	}
	have, err := registry.ParseReference(r.Ref)
	return err == nil && have.Name() == ref.Name()
}

// Remove deletes the index.json entries of ref for platform (nil: every platform). The
// blobs stay until GC. It returns ErrNotCached when nothing matched.
func (s *Store) Remove(ctx context.Context, ref registry.Reference, platform *ocispec.Platform) error {
	want := ref.String()
	removed := 0
	err := s.updateIndex(ctx, func(idx *ocispec.Index) (bool, error) {
		idx.Manifests = slices.DeleteFunc(idx.Manifests, func(d ocispec.Descriptor) bool {
			r, ok := recordOf(d)
			hit := ok && r.Ref == want && (platform == nil || samePlatform(r.Platform, *platform))
			if hit {
				removed++
			}
			return hit
		})
		if removed == 0 {
			return false, fmt.Errorf("remove %s: %w", want, ErrNotCached)
		}
		return true, nil
	})
	return err
}
