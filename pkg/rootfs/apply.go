package rootfs

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Apply applies one uncompressed layer tar, read from r, onto the directory root, which may
// already hold the layers below it. Entries are applied in tar order with the semantics in the
// package documentation; nothing outside root is created, written, linked to, changed or
// removed, whatever the entries say.
//
// An entry that cannot be applied stops Apply with an [*EntryError] naming it; unsafe names wrap
// [ErrUnsafePath], exceeded [Limits] wrap [ErrLimit]. On error the state of root is undefined:
// callers that need atomicity apply into a temporary directory (as [Flatten] does).
//
// Apply needs Linux 5.6 or later (openat2).
func Apply(ctx context.Context, root string, r io.Reader, opts ...ApplyOption) error {
	o, err := makeApplyOptions(opts)
	if err != nil {
		return err
	}
	_, err = applyLayer(ctx, root, r, o, nil)
	return err
}

// applyUpper applies a layer into the empty directory root in upper mode: as an overlayfs
// layer over layers it does not see (whiteouts become whiteout devices, opaque markers opaque
// xattrs; see snapshot.go). It returns what [finishUpper] needs once the lower layers exist.
func applyUpper(ctx context.Context, root string, r io.Reader, o *applyOptions) (*upperState, map[string]bool, error) {
	if o.rootless {
		return nil, nil, fmt.Errorf("%w: overlay layers need root", ErrNeedsLowers)
	}
	st := newUpperState()
	a, err := applyLayer(ctx, root, r, o, st)
	if err != nil {
		return nil, nil, err
	}
	return st, a.created, nil
}

func applyLayer(ctx context.Context, root string, r io.Reader, o *applyOptions, upper *upperState) (*applier, error) {
	rootFd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("apply layer: open root %s: %w", root, &os.PathError{Op: "open", Path: root, Err: err})
	}
	a := newApplier(o, rootFd)
	a.upper = upper
	defer a.close()

	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("apply layer: %w", err)
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("apply layer: read tar: %w", err)
		}
		if err := a.entry(hdr, tr); err != nil {
			return nil, err
		}
	}
	if err := a.finish(); err != nil {
		return nil, fmt.Errorf("apply layer: %w", err)
	}
	return a, nil
}

// applier holds the state of one Apply: the root fd, cached parent directories and what must
// happen at the end of the layer (opaque directories, directory times, final modes).
type applier struct {
	o      *applyOptions
	rootFd int
	umask  uint32

	parents parentCache
	// parentSgid is set by parent: the last resolved parent is setgid. rootSgid is the root's.
	parentSgid, rootSgid bool
	// parentReal is set by parent: the clean name the last resolved parent really has ("" for
	// the root). rootPath is the root's path as /proc shows it (set on first use).
	parentReal, rootPath string
	// parentRealOK: parentReal was told by the kernel, not guessed from the name.
	parentRealOK bool
	// ownerIsRoot: we create files as 0:0, so 0:0 entries need no chown unless parentSgid.
	ownerIsRoot bool

	// created holds the paths this layer created (true) and their ancestors (false), by the
	// clean name they really have (resolved through symlinks, so that a layer writing through
	// a symlinked directory and marking it opaque under the other name keeps its entries);
	// opaque markers and same-layer whiteouts keep exactly these paths.
	created map[string]bool
	// fresh holds the real names of directories this layer's entries made with mkdir (where
	// nothing was): no lower layer has anything at or below them, as Apply never renames and
	// whatever it creates is this layer's, so opaque markers need not walk them.
	fresh  map[string]bool
	opaque []opaqueDir
	dirs   []dirMeta

	// rootless bookkeeping: directories made u+rwx while applying, restored at the end.
	restore     []modeFix
	restoreSeen map[devIno]bool

	entries, total int64
	warned         map[string]bool

	// upper is set in upper mode (applyUpper): the root is an empty overlayfs layer directory.
	upper *upperState
}

// opaqueDir is a directory whose lower-layer contents go at the end of the layer: one with an
// opaque marker, or one this layer wrote into and then whited out (whiteout is set: then the
// directory itself is also the lower layers', unless this layer lists it).
type opaqueDir struct {
	name     string
	whiteout bool
	// real is the real name name had when the marker was read, if known without a syscall; it
	// still holds at the end if gen is 1 + the parent cache's invalidations by then.
	real string
	gen  int
}

type dirMeta struct {
	name         string
	atime, mtime unix.Timespec
	mode         uint32 // final mode to set at the end (rootless only; 0 = none)
	fixMode      bool
}

type modeFix struct {
	fd   int
	mode uint32
}

type devIno struct{ dev, ino uint64 }

func newApplier(o *applyOptions, rootFd int) *applier {
	var st unix.Stat_t
	rootSgid := unix.Fstat(rootFd, &st) != nil || st.Mode&unix.S_ISGID != 0
	return &applier{
		rootSgid:    rootSgid,
		ownerIsRoot: os.Geteuid() == 0 && os.Getegid() == 0,
		o:           o,
		rootFd:      rootFd,
		umask:       processUmask(),
		parents:     parentCache{rootFd: rootFd, made: make(map[string]cachedDir)},
		created:     make(map[string]bool),
		fresh:       make(map[string]bool),
		warned:      make(map[string]bool),
	}
}

func (a *applier) close() {
	a.parents.closeAll()
	for _, f := range a.restore {
		unix.Close(f.fd)
	}
	a.restore = nil
	unix.Close(a.rootFd)
}

// warnOnce logs msg the first time key is seen in this Apply.
func (a *applier) warnOnce(key, msg string, args ...any) {
	if a.warned[key] {
		return
	}
	a.warned[key] = true
	a.o.logger.Warn(msg, args...)
}

func entryErr(hdr *tar.Header, op string, err error) error {
	return &EntryError{Name: hdr.Name, Op: op, Err: err}
}

// entry applies one tar header (and its body, read from r).
func (a *applier) entry(hdr *tar.Header, r io.Reader) error {
	lim := &a.o.limits
	a.entries++
	if a.entries > lim.MaxEntries {
		return entryErr(hdr, "check", fmt.Errorf("%w: more than %d entries", ErrLimit, lim.MaxEntries))
	}
	if len(hdr.Name) > lim.MaxPathLen || len(hdr.Linkname) > lim.MaxPathLen {
		return entryErr(hdr, "check", fmt.Errorf("%w: name or link target longer than %d bytes", ErrLimit, lim.MaxPathLen))
	}
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil // global PAX records carry no file
	case typeGNUVolHdr:
		a.warnOnce("volhdr", "skipping GNU volume header", "name", hdr.Name)
		return nil
	case tar.TypeGNUSparse:
		return entryErr(hdr, "check", fmt.Errorf("%w: sparse file", ErrUnsupportedEntry))
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return entryErr(hdr, "check", fmt.Errorf("%w: sparse file", ErrUnsupportedEntry))
		}
	}

	name, err := cleanName(hdr.Name)
	if err != nil {
		return entryErr(hdr, "check", err)
	}
	if depth := strings.Count(name, "/") + 1; depth > lim.MaxPathDepth {
		return entryErr(hdr, "check", fmt.Errorf("%w: %d path components, more than %d", ErrLimit, depth, lim.MaxPathDepth))
	}
	dir, base := splitName(name)
	if strings.HasPrefix(base, WhiteoutPrefix) {
		return a.whiteout(hdr, dir, base)
	}
	if strings.Contains(dir, WhiteoutPrefix) && hasWhiteoutComponent(dir) {
		return entryErr(hdr, "check", fmt.Errorf("%w: whiteout name used as a directory", ErrUnsafePath))
	}

	if name == "." {
		// The root's type is fixed: only a directory entry may touch it, and only its metadata.
		if hdr.Typeflag != tar.TypeDir {
			return entryErr(hdr, "check", fmt.Errorf("%w: entry of type %q would replace the root", ErrUnsafePath, hdr.Typeflag))
		}
		return a.dir(hdr, name, a.rootFd, ".")
	}

	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
	case tar.TypeChar, tar.TypeBlock:
		if a.o.rootless {
			a.warnOnce("device", "skipping device nodes: not running as root", "first", hdr.Name)
			return nil
		}
	default:
		return entryErr(hdr, "check", fmt.Errorf("%w: type %q", ErrUnsupportedEntry, hdr.Typeflag))
	}

	pfd, err := a.parent(dir, true)
	if err != nil {
		return entryErr(hdr, "resolve parent", err)
	}
	real := joinName(a.parentReal, base)
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA:
		if hdr.Size > lim.MaxFileSize {
			return entryErr(hdr, "check", fmt.Errorf("%w: file of %d bytes, more than %d", ErrLimit, hdr.Size, lim.MaxFileSize))
		}
		if a.total += hdr.Size; a.total > lim.MaxTotalBytes {
			return entryErr(hdr, "check", fmt.Errorf("%w: more than %d bytes of files", ErrLimit, lim.MaxTotalBytes))
		}
		err = a.file(hdr, r, pfd, base)
	case tar.TypeDir:
		err = a.dir(hdr, name, pfd, base)
	case tar.TypeSymlink:
		err = a.symlink(hdr, pfd, base)
	case tar.TypeLink:
		err = a.hardlink(hdr, name, pfd, base)
	default: // fifo, char, block
		err = a.node(hdr, pfd, base)
	}
	if err != nil {
		return err
	}
	a.markCreated(real)
	return nil
}

// markCreated records name, and its ancestors as containing created paths, for opaque markers.
func (a *applier) markCreated(name string) {
	a.created[name] = true
	for {
		i := strings.LastIndexByte(name, '/')
		if i < 0 {
			return
		}
		name = name[:i]
		if _, ok := a.created[name]; ok {
			return
		}
		a.created[name] = false
	}
}

// copyBufs holds 1 MiB buffers for file bodies, shared by concurrent Applies.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// processUmask reads the umask without changing it (umask(2) is process-wide and racy).
func processUmask() uint32 {
	b, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				var m uint32
				if _, err := fmt.Sscanf(strings.TrimSpace(v), "%o", &m); err == nil {
					return m
				}
			}
		}
	}
	return 0o777 // unknown: assume the worst, so modes are always set explicitly
}

// typeGNUVolHdr is GNU tar's volume label ('V'): a header with no file, safe to skip.
const typeGNUVolHdr = 'V'
