package layers

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// Fetcher returns the raw, unverified bytes of a blob starting at offset; start is where
// the stream really begins (0 when the server ignored the range). registry.Source fits.
type Fetcher interface {
	Fetch(ctx context.Context, desc ocispec.Descriptor, offset int64) (rc io.ReadCloser, start int64, err error)
}

const (
	// maxResumes bounds how often one Ensure resumes a body that broke mid-stream.
	maxResumes = 4
	// copyBufSize is the unit of download I/O and of progress reports.
	copyBufSize = 256 << 10
)

// Ensure makes the blob desc present and verified in the store, fetching it from f when
// missing. A blob already present costs nothing (no request). Otherwise it takes the
// blob's lock (another process may be downloading it: when the lock is ours the blob is
// usually there), resumes from ingest/<hex>.partial when an earlier download was cut
// (re-hashing its bytes and asking f for the rest with a Range request), checks size and
// sha256 while streaming, fsyncs and renames the file into blobs/sha256/.
//
// A body that breaks mid-stream is resumed a few times before Ensure gives up; the partial
// file is then kept so that the next attempt (even by another process) resumes it. Bytes
// proven wrong (too many, or the wrong digest) are deleted and reported as
// ErrSizeMismatch or *DigestError; a full disk is a *DiskFullError and leaves nothing
// behind.
func (s *Store) Ensure(ctx context.Context, desc ocispec.Descriptor, f Fetcher, p ProgressFunc) error {
	if err := s.ensure(ctx, desc, f, p); err != nil {
		return fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	return nil
}

func (s *Store) ensure(ctx context.Context, desc ocispec.Descriptor, f Fetcher, p ProgressFunc) error {
	return s.ensureFollowed(ctx, desc, f, p, nil)
}

// ensureFollowed is ensure; when the blob is downloaded here from its first byte, started is
// called with a growth that follows the download (PullOptions.LayerStarted).
func (s *Store) ensureFollowed(ctx context.Context, desc ocispec.Descriptor, f Fetcher, p ProgressFunc, started func(*growth)) error {
	if err := validDigest(desc.Digest); err != nil {
		return err
	}
	if desc.Size < 0 {
		return fmt.Errorf("negative size %d: %w", desc.Size, ErrSizeMismatch)
	}
	cached := Event{Kind: EventLayerCached, Digest: desc.Digest, Total: desc.Size, Done: desc.Size}
	if s.Has(desc.Digest) {
		p.emit(cached)
		return nil
	}
	release, err := s.Hold(ctx)
	if err != nil {
		return err
	}
	defer release()
	l, err := s.lockFile(ctx, blobLockName(desc.Digest.Encoded()), unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer l.Unlock()
	if s.Has(desc.Digest) { // committed by whoever held the lock before us
		p.emit(cached)
		return nil
	}
	if err := s.download(ctx, desc, f, p, started); err != nil {
		return err
	}
	p.emit(Event{Kind: EventLayerDone, Digest: desc.Digest, Total: desc.Size, Done: desc.Size})
	return nil
}

// download runs with the blob lock held.
func (s *Store) download(ctx context.Context, desc ocispec.Descriptor, f Fetcher, p ProgressFunc, started func(*growth)) (err error) {
	partial := filepath.Join(s.ingest, desc.Digest.Encoded()+".partial")
	file, err := os.OpenFile(partial, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return diskFull(partial, fmt.Errorf("open partial: %w", err))
	}
	dl := &download{desc: desc, path: partial, file: file, h: sha256.New(), p: p}
	keep := true // keep the partial file as a resume hint unless its bytes are proven wrong
	defer func() {
		if file != nil {
			file.Close()
		}
		if err != nil && (!keep || isDiskFull(err)) {
			// A full disk: free the space; the bytes would not be trusted anyway.
			os.Remove(partial)
		}
		err = diskFull(partial, err)
	}()

	if err := dl.rehash(); err != nil {
		return err
	}
	resumed := dl.n > 0
	if resumed {
		s.log.Debug("resuming partial download", "digest", desc.Digest, "offset", dl.n)
	} else if started != nil {
		// Readers may follow a download from byte 0: every byte they see is one this
		// download writes and hashes. (A resumed download may start over if its old bytes
		// do not verify: it is not followed.)
		dl.grow = newGrowth(partial)
		defer func() { dl.grow.finish(err) }()
		started(dl.grow)
	}
	p.emit(Event{Kind: EventLayerStart, Digest: desc.Digest, Total: desc.Size, Done: dl.n})

	for attempt := 0; ; {
		err := dl.fetch(ctx, f)
		switch {
		case err == nil:
		case errors.Is(err, errOversize):
			keep = false
			return err
		case ctx.Err() != nil, !errors.Is(err, errBroken):
			return err
		default:
			attempt++
			if attempt > maxResumes {
				return err
			}
			s.log.Debug("download broke, resuming", "digest", desc.Digest, "offset", dl.n, "err", err)
			p.emit(Event{Kind: EventRetry, Digest: desc.Digest, Total: desc.Size, Done: dl.n, Err: err})
			if err := sleepCtx(ctx, time.Duration(attempt)*100*time.Millisecond); err != nil {
				return err
			}
			continue
		}
		if got := digest.NewDigest(digest.SHA256, dl.h); got != desc.Digest {
			if resumed {
				// The old partial bytes may be what is wrong (written before a power
				// loss, or by a different server): start over once from byte 0.
				resumed = false
				s.log.Debug("resumed download does not verify, restarting", "digest", desc.Digest)
				p.emit(Event{Kind: EventRetry, Digest: desc.Digest, Total: desc.Size, Msg: "restart: resumed bytes did not verify"})
				if err := dl.reset(); err != nil {
					return err
				}
				continue
			}
			keep = false
			return &DigestError{Want: desc.Digest, Got: got}
		}
		break
	}

	if err := file.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", partial, err)
	}
	if err := file.Close(); err != nil {
		file = nil
		return fmt.Errorf("close %s: %w", partial, err)
	}
	file = nil
	final, _ := s.blobPath(desc.Digest)
	if err := os.Rename(partial, final); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return diskFull(s.blobs, syncDir(s.blobs))
}

var (
	// errBroken marks a body that ended early or failed mid-stream: worth resuming.
	errBroken = errors.New("transfer interrupted")
	// errOversize marks a body longer than the descriptor's size.
	errOversize = fmt.Errorf("body longer than the descriptor size: %w", ErrSizeMismatch)
)

// download is one blob's transfer into its partial file. n bytes of the file are written
// and hashed into h.
type download struct {
	desc ocispec.Descriptor
	path string
	file *os.File
	h    hash.Hash
	n    int64
	p    ProgressFunc
	grow *growth // readers following the download, or nil
}

// rehash hashes the bytes a previous, interrupted download left in the partial file; ingest
// files are never trusted, only re-read. A file longer than the blob is discarded.
func (d *download) rehash() error {
	n, err := io.Copy(d.h, io.LimitReader(d.file, d.desc.Size+1))
	if err != nil {
		return fmt.Errorf("read partial %s: %w", d.path, err)
	}
	if n > d.desc.Size {
		return d.reset()
	}
	d.n = n
	_, err = d.file.Seek(n, io.SeekStart)
	return err
}

// reset empties the partial file.
func (d *download) reset() error {
	if err := d.file.Truncate(0); err != nil {
		return fmt.Errorf("truncate %s: %w", d.path, err)
	}
	if _, err := d.file.Seek(0, io.SeekStart); err != nil {
		return err
	}
	d.h.Reset()
	d.n = 0
	if d.grow != nil {
		d.grow.restart()
	}
	return nil
}

// fetch streams the rest of the blob from f into the partial file. It returns nil once the
// body ended exactly at the blob's size, an errBroken error when it ended early or failed
// (resumable), errOversize when it went past the size.
func (d *download) fetch(ctx context.Context, f Fetcher) error {
	if d.n == d.desc.Size {
		return nil
	}
	rc, start, err := f.Fetch(ctx, d.desc, d.n)
	if err != nil {
		return err
	}
	defer rc.Close()
	if start != d.n {
		// The server ignored the Range (start 0) or answered another one: keep nothing.
		if err := d.reset(); err != nil {
			return err
		}
		if start != 0 {
			return fmt.Errorf("server answered range from %d, not 0: %w", start, errBroken)
		}
	}
	buf := make([]byte, copyBufSize)
	reported := d.n
	for {
		// Read at most one byte past the size: an endless body stops here.
		want := min(int64(len(buf)), d.desc.Size+1-d.n)
		k, rerr := rc.Read(buf[:want])
		if k > 0 {
			if d.n+int64(k) > d.desc.Size {
				return errOversize
			}
			if _, err := d.file.Write(buf[:k]); err != nil {
				return fmt.Errorf("write %s: %w", d.path, err)
			}
			d.h.Write(buf[:k])
			d.n += int64(k)
			if d.grow != nil {
				d.grow.advance(d.n)
			}
			if d.n-reported >= copyBufSize || d.n == d.desc.Size {
				reported = d.n
				d.p.emit(Event{Kind: EventLayerBytes, Digest: d.desc.Digest, Total: d.desc.Size, Done: d.n})
			}
		}
		switch {
		case rerr == io.EOF && d.n == d.desc.Size:
			return nil
		case rerr == io.EOF:
			return fmt.Errorf("body ended at %d of %d bytes: %w", d.n, d.desc.Size, errBroken)
		case rerr != nil:
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("%w at %d of %d bytes: %w", errBroken, d.n, d.desc.Size, rerr)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
