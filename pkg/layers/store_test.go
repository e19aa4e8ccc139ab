package layers

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestOpenLayout(t *testing.T) {
	s := newStore(t)
	fi, err := os.Stat(s.Root())
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("root: %v, mode %v; want 0700", err, fi.Mode())
	}
	var layout ocispec.ImageLayout
	readJSON(t, filepath.Join(s.LayoutDir(), "oci-layout"), &layout)
	if layout.Version != "1.0.0" {
		t.Errorf("oci-layout version %q", layout.Version)
	}
	var idx ocispec.Index
	readJSON(t, filepath.Join(s.LayoutDir(), "index.json"), &idx)
	if idx.SchemaVersion != 2 || idx.MediaType != ocispec.MediaTypeImageIndex || idx.Manifests == nil {
		t.Errorf("index.json = %+v", idx)
	}
	for _, d := range []string{"oci/blobs/sha256", "ingest", "locks", "tmp"} {
		if fi, err := os.Stat(filepath.Join(s.Root(), d)); err != nil || !fi.IsDir() {
			t.Errorf("%s: %v", d, err)
		}
	}
	// Opening again keeps what is there.
	if err := s.putRecord(t.Context(), Record{Ref: "r", Platform: amd64, Descriptor: descOf(ocispec.MediaTypeImageManifest, []byte("m"))}); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	if recs, err := s2.Images(t.Context()); err != nil || len(recs) != 1 {
		t.Errorf("reopened store: %v, %v", recs, err)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestHostileDigests: digests from manifests are attacker input and never become paths
// unless they are well-formed sha256 (THREATS B6).
func TestHostileDigests(t *testing.T) {
	s := newStore(t)
	for _, d := range []digest.Digest{
		"sha256:../../../../etc/passwd",
		digest.Digest("sha256:../" + digest.FromString("x").Encoded()[3:]),
		digest.SHA512.FromString("x"),
		"md5:d41d8cd98f00b204e9800998ecf8427e",
		"",
		"sha256:ABCDEF",
	} {
		if s.Has(d) {
			t.Errorf("Has(%q) = true", d)
		}
		if _, err := s.ReadBlob(t.Context(), d, 1<<20); !errors.Is(err, ErrInvalidDigest) {
			t.Errorf("ReadBlob(%q) = %v, want ErrInvalidDigest", d, err)
		}
		if err := s.putBlob(d, []byte("x")); !errors.Is(err, ErrInvalidDigest) {
			t.Errorf("putBlob(%q) = %v, want ErrInvalidDigest", d, err)
		}
	}
}

// TestSymlinkBlob: a blob that is a symlink (a tampered or imported layout) is never
// followed (THREATS B7).
func TestSymlinkBlob(t *testing.T) {
	s := newStore(t)
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("secret"), 0o600)
	d := digest.FromString("secret")
	if err := os.Symlink(secret, filepath.Join(s.blobs, d.Encoded())); err != nil {
		t.Fatal(err)
	}
	if s.Has(d) {
		t.Error("Has follows a symlink")
	}
	if _, err := s.ReadBlob(t.Context(), d, 100); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadBlob = %v, want ErrNotFound", err)
	}
	if _, err := s.OpenBlob(t.Context(), ocispec.Descriptor{Digest: d, Size: 6}); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenBlob = %v, want ErrNotFound", err)
	}
}

func TestReadBlob(t *testing.T) {
	s := newStore(t)
	data := []byte(`{"schemaVersion":2}`)
	d := digest.FromBytes(data)
	if err := s.putBlob(d, []byte("other bytes")); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("putBlob with wrong bytes = %v", err)
	}
	if _, err := s.ReadBlob(t.Context(), d, 100); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ReadBlob(missing) = %v", err)
	}
	if err := s.putBlob(d, data); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReadBlob(t.Context(), d, 100); err != nil || string(got) != string(data) {
		t.Fatalf("ReadBlob = %q, %v", got, err)
	}
	if _, err := s.ReadBlob(t.Context(), d, 5); !errors.Is(err, ErrSizeMismatch) {
		t.Errorf("ReadBlob over limit = %v", err)
	}
	// Damaged on disk: detected and removed, so it can be fetched again.
	os.WriteFile(filepath.Join(s.blobs, d.Encoded()), []byte(`{"schemaVersion":3}`), 0o600)
	var de *DigestError
	if _, err := s.ReadBlob(t.Context(), d, 100); !errors.As(err, &de) || de.Want != d {
		t.Errorf("ReadBlob(damaged) = %v, want *DigestError", err)
	}
	if s.Has(d) {
		t.Error("damaged blob not removed")
	}
}

func TestOpenBlob(t *testing.T) {
	s := newStore(t)
	data := randomBytes(9, 100<<10)
	desc := descOf("", data)
	s.putBlob(desc.Digest, data)
	for _, tc := range []struct {
		name    string
		desc    ocispec.Descriptor
		openErr error
	}{
		{name: "ok", desc: desc},
		{name: "descriptor size differs", desc: ocispec.Descriptor{Digest: desc.Digest, Size: desc.Size - 1}, openErr: ErrSizeMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := s.OpenBlob(t.Context(), tc.desc)
			if !errors.Is(err, tc.openErr) || (err == nil) != (tc.openErr == nil) {
				t.Fatalf("OpenBlob = %v, want %v", err, tc.openErr)
			}
			if err == nil {
				defer rc.Close()
				if b, err := io.ReadAll(rc); err != nil || len(b) != len(data) {
					t.Errorf("read %d bytes, %v", len(b), err)
				}
			}
		})
	}
}
