package rootfs

import (
	"archive/tar"
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// Export writes the flattened root filesystem of layers (lowest first, as in a manifest) to w
// as one tar stream. The layers are read once, top layer first, and nothing is unpacked to
// disk, so the export is lossless without root: owners, device nodes, setuid bits and xattrs
// come from the layer headers. Its content (paths, types, modes, owners, link targets, file
// bytes) is what [Flatten] builds from the same layers, minus the root directory itself and
// with no whiteout files.
//
// The stream is byte-for-byte the same for the same layers on every run and machine:
//
//   - Order: entries of the top layer first, in its tar order, then those of each lower layer;
//     a hard link comes right after the entry it links to when that entry is in a lower
//     layer, and directories that no layer lists (parents created implicitly) come last,
//     sorted.
//   - Headers: PAX format; name without a leading "/" or "./" (directories end in "/"); mode
//     (permission, setuid, setgid and sticky bits), numeric uid and gid, and mtime as in the
//     layer; user and group names, access and change times cleared; xattrs (SCHILY.xattr.*
//     records) kept except overlayfs ones (trusted.overlay.*, user.overlay.*); other PAX
//     records dropped. Implicit parent directories are 0755, owned by 0:0, with mtime 0.
//   - Hard links: the files sharing an inode in the flattened tree are written once, under
//     the first of their paths in this order, and the others as links to it; an inode whose
//     original path a higher layer replaced or deleted keeps its old content under its
//     surviving links, as on disk.
//
// Whiteouts and opaque markers hide what the layers below put there, wherever they appear
// in their own layer (OCI image-spec): an entry of the same layer is kept. Entry names are
// taken literally: a layer entry below a path that a lower layer made a
// symlink is exported under its own name (Apply would write it through the symlink, inside
// the root; docker-built layers never contain such entries). A path repeated within one layer
// is written each time, the last one last, which is how tar extractors resolve it; contents
// are never buffered to avoid that.
//
// Unsafe entry names and link targets fail Export like [Apply] ([ErrUnsafePath]), as do
// unsupported entries and a hard link whose target does not exist. A layer that exceeds the
// [Limits] (of [WithLimits], else [DefaultLimits]; the other options do not apply) fails
// Export with an error wrapping [ErrLimit], as it fails Apply: Export remembers a few dozen
// bytes per path, so MaxEntries per layer bounds its memory. Decompression runs ahead of the
// writer, up to one layer per core at once, with bounded buffers: what the writer cannot take
// yet (lower layers, while it writes the upper ones) goes to an unnamed temporary file in
// [os.TempDir] ([ExportFile]: beside its output), using at most half of that filesystem's
// free space, and is read back from there; where no such file can be made, decoding waits
// for the writer instead. On error the tar written so far is incomplete (it has no
// end-of-archive marker).
func Export(ctx context.Context, w io.Writer, layers []Layer, opts ...ApplyOption) error {
	return export(ctx, w, layers, newSpiller(os.TempDir(), ".imgrun-spill-"), exportDecoders(), opts)
}

// export is [Export], decoding up to decoders layers at once and spilling those decoded
// ahead of the writer with sp.
func export(ctx context.Context, w io.Writer, layers []Layer, sp *spiller, decoders int, opts []ApplyOption) error {
	o, err := makeApplyOptions(opts)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	// Tar headers are 512-byte writes: batch them into fewer, larger writes to w.
	bw := bufio.NewWriterSize(w, 256<<10)
	e := &exporter{
		ctx:      ctx,
		lim:      o.limits,
		layers:   layers,
		spill:    sp,
		decoders: decoders,
		tw:       tar.NewWriter(bw),
		paths:    make(map[string]*pathState),
		pending:  make(map[string][]*inode),
		implied:  make(map[string]bool),
	}
	if err := e.run(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

// noLayer marks a pathState field that no layer set.
const noLayer = math.MaxInt

// pathState is what the layers above the one being read did to a path. Each field holds the
// lowest such layer (or noLayer), which answers both "is it hidden in the final tree" and
// "was it hidden as of layer M", which hard links to lower layers need.
type pathState struct {
	cover   int  // an entry at this path: lower entries at the path itself are replaced
	subtree int  // a whiteout or a non-directory: the path and all below it are gone
	kids    int  // an opaque marker: everything below the path is gone, the path stays
	emitted bool // an entry was written under this path
}

type exporter struct {
	ctx      context.Context
	lim      Limits
	layers   []Layer
	spill    *spiller
	decoders int
	tw       *tar.Writer
	paths    map[string]*pathState
	pending  map[string][]*inode // placeholders for hard-link targets in lower layers, by path
	implied  map[string]bool     // directories in the final tree created by entries below them
	buf      []byte
}

func (e *exporter) run() error {
	n := len(e.layers)
	order := make([]int, n)
	for i := range order {
		order[i] = n - 1 - i // top layer first
	}
	q := newSpoolQueue(e.ctx, e.layers, order, e.decoders, e.spill)
	defer q.Close()
	e.buf = make([]byte, 256<<10)
	for {
		s, idx, err := q.Next()
		if err == io.EOF {
			break
		}
		if err := e.layer(idx, s); err != nil {
			return fmt.Errorf("layer %d of %d: %w", idx+1, n, err)
		}
	}
	if len(e.pending) > 0 {
		targets := slices.Sorted(maps.Keys(e.pending))
		return &EntryError{Name: targets[0], Op: "link", Err: fmt.Errorf("hard link target %q: %w", targets[0], fs.ErrNotExist)}
	}
	if err := e.impliedDirs(); err != nil {
		return err
	}
	return e.tw.Close()
}

func (e *exporter) state(p string) *pathState {
	st := e.paths[p]
	if st == nil {
		st = &pathState{cover: noLayer, subtree: noLayer, kids: noLayer}
		e.paths[p] = st
	}
	return st
}

// visibleAsOf reports whether an entry at p in the layer being read is still there after the
// layers below m are applied: no layer between them replaced or hid p or one of its
// ancestors. With m = len(layers) it tells whether the entry is in the final tree.
func (e *exporter) visibleAsOf(p string, m int) bool {
	if st := e.paths["."]; st != nil && st.kids < m {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] != '/' {
			continue
		}
		if st := e.paths[p[:i]]; st != nil && (st.subtree < m || st.kids < m) {
			return false
		}
	}
	st := e.paths[p]
	return st == nil || (st.cover >= m && st.subtree >= m)
}

// exportHeader is the fixed-field header written for an entry of type typ named name, with
// the metadata of src.
func exportHeader(name string, src *tar.Header, typ byte) *tar.Header {
	h := &tar.Header{
		Typeflag: typ,
		Name:     name,
		Mode:     src.Mode & 0o7777,
		Uid:      src.Uid,
		Gid:      src.Gid,
		ModTime:  src.ModTime,
		Format:   tar.FormatPAX,
	}
	switch typ {
	case tar.TypeDir:
		h.Name += "/"
	case tar.TypeReg:
		h.Size = src.Size
	case tar.TypeSymlink:
		h.Linkname = src.Linkname
	case tar.TypeChar, tar.TypeBlock:
		h.Devmajor, h.Devminor = src.Devmajor, src.Devminor
	}
	if typ != tar.TypeLink {
		for k, v := range src.PAXRecords {
			if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok && !overlayXattr(x) {
				if h.PAXRecords == nil {
					h.PAXRecords = make(map[string]string)
				}
				h.PAXRecords[k] = v
			}
		}
	}
	return h
}

// overlayXattr reports xattrs that could fake whiteouts on an overlayfs-backed store.
func overlayXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.")
}

func (e *exporter) write(h *tar.Header, body io.Reader) error {
	if err := e.tw.WriteHeader(h); err != nil {
		return &EntryError{Name: h.Name, Op: "export", Err: err}
	}
	if body != nil {
		if _, err := io.CopyBuffer(e.tw, io.LimitReader(body, h.Size), e.buf); err != nil {
			return &EntryError{Name: h.Name, Op: "export", Err: err}
		}
	}
	e.state(strings.TrimSuffix(h.Name, "/")).emitted = true
	return nil
}

// markParents records the ancestors of an entry at name that are in the final tree: if no
// layer lists them, Apply creates them (0755), and so must the export, even when everything
// below them is later hidden. They count against MaxEntries like the layer's entries: a deep
// name could otherwise make Export remember hundreds of paths per entry.
func (e *exporter) markParents(l *layerPass, name string) error {
	for i := len(name) - 1; i > 0; i-- {
		if name[i] != '/' {
			continue
		}
		d := name[:i]
		if e.implied[d] {
			return nil // its own ancestors were marked with it
		}
		if e.visibleAsOf(d, len(e.layers)) {
			if l.implied++; l.implied > e.lim.MaxEntries {
				return fmt.Errorf("%w: more than %d implied parent directories", ErrLimit, e.lim.MaxEntries)
			}
			e.implied[d] = true
		}
	}
	return nil
}

// impliedDirs writes the directories that are in the final tree but that no layer listed
// there (Apply creates them as 0755). Sorted, so parents come first.
func (e *exporter) impliedDirs() error {
	var dirs []string
	for d := range e.implied {
		if st := e.paths[d]; st == nil || !st.emitted {
			dirs = append(dirs, d)
		}
	}
	slices.Sort(dirs)
	src := &tar.Header{Mode: 0o755, ModTime: time.Unix(0, 0)}
	for _, d := range dirs {
		if err := e.write(exportHeader(d, src, tar.TypeDir), nil); err != nil {
			return err
		}
	}
	return nil
}
