package layers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// Store is imgrun's content-addressed cache: a standard OCI image layout under ROOT/oci,
// plus ingest/, locks/ and tmp/ beside it on the same filesystem. Its methods are safe for
// concurrent use by several goroutines and several processes.
type Store struct {
	root   string
	layout string // ROOT/oci
	blobs  string // ROOT/oci/blobs/sha256
	ingest string
	locks  string
	tmp    string
	log    *slog.Logger
}

// Option configures a Store.
type Option func(*Store) error

// WithLogger sends the store's debug messages (resumes, retries, removals) to l. The
// default discards them.
func WithLogger(l *slog.Logger) Option {
	return func(s *Store) error {
		if l == nil {
			return errors.New("WithLogger: nil logger")
		}
		s.log = l
		return nil
	}
}

// Open opens the store at root, creating its layout when missing. root is made mode 0700:
// image files (setuid binaries among them) must not be reachable by other users.
func Open(root string, opts ...Option) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", root, err)
	}
	s := &Store{
		root:   abs,
		layout: filepath.Join(abs, "oci"),
		blobs:  filepath.Join(abs, "oci", "blobs", "sha256"),
		ingest: filepath.Join(abs, "ingest"),
		locks:  filepath.Join(abs, "locks"),
		tmp:    filepath.Join(abs, "tmp"),
		log:    slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		if err := o(s); err != nil {
			return nil, fmt.Errorf("open store %s: %w", root, err)
		}
	}
	if err := s.init(); err != nil {
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	return s, nil
}

func (s *Store) init() error {
	if err := os.MkdirAll(s.root, 0o700); err != nil {
		return diskFull(s.root, err)
	}
	if err := os.Chmod(s.root, 0o700); err != nil {
		return err
	}
	for _, d := range []string{s.blobs, s.ingest, s.locks, s.tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return diskFull(d, err)
		}
	}
	layoutFile := filepath.Join(s.layout, ocispec.ImageLayoutFile)
	if exists(layoutFile) && exists(s.indexPath()) {
		return nil
	}
	// Under the index lock: another process may be creating the layout too.
	l, err := s.lockFile(context.Background(), indexLockName, unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer l.Unlock()
	if _, err := os.Lstat(layoutFile); errors.Is(err, fs.ErrNotExist) {
		data := []byte(`{"imageLayoutVersion":"` + ocispec.ImageLayoutVersion + `"}`)
		if err := writeFileAtomic(layoutFile, data, 0o644); err != nil {
			return err
		}
	}
	if _, err := os.Lstat(s.indexPath()); errors.Is(err, fs.ErrNotExist) {
		return s.writeIndex(&ocispec.Index{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: ocispec.MediaTypeImageIndex,
			Manifests: []ocispec.Descriptor{},
		})
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// Root is the store's root directory (absolute).
func (s *Store) Root() string { return s.root }

// LayoutDir is ROOT/oci, an OCI image layout other tools (skopeo, umoci, crane) can read.
func (s *Store) LayoutDir() string { return s.layout }
