// Package tartest builds small, deterministic tar streams for tests.
//
// Each entry constructor returns an [Entry]; [Tar] writes the entries in order and returns the
// bytes. Defaults are fixed (mode 0644 for files, 0755 for directories, 0777 for symlinks, owner
// 0:0, mtime 2000-01-01 UTC, PAX format), so the same entries always give the same bytes. Options
// such as [Mode], [Owner], [MTime] and [Xattr] adjust one entry. Nothing here validates names:
// hostile tars (../ names, links out of the tree) are the point.
package tartest

import (
	"archive/tar"
	"bytes"
	"io"
	"time"
)

// Epoch is the default modification time of every entry.
var Epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Entry is one tar record: a header and, for regular files, its content.
type Entry struct {
	Header tar.Header
	Body   []byte
}

// Option changes one entry's header.
type Option func(*Entry)

// Mode sets the permission bits (including setuid/setgid/sticky).
func Mode(m int64) Option { return func(e *Entry) { e.Header.Mode = m } }

// Owner sets the numeric uid and gid.
func Owner(uid, gid int) Option {
	return func(e *Entry) { e.Header.Uid, e.Header.Gid = uid, gid }
}

// MTime sets the modification (and access) time.
func MTime(t time.Time) Option {
	return func(e *Entry) { e.Header.ModTime, e.Header.AccessTime = t, t }
}

// Xattr adds a SCHILY.xattr.NAME PAX record.
func Xattr(name, value string) Option {
	return func(e *Entry) { PAX("SCHILY.xattr."+name, value)(e) }
}

// PAX adds a raw PAX record (e.g. GNU.sparse.* to build hostile headers).
func PAX(key, value string) Option {
	return func(e *Entry) {
		if e.Header.PAXRecords == nil {
			e.Header.PAXRecords = map[string]string{}
		}
		e.Header.PAXRecords[key] = value
	}
}

func entry(typ byte, name string, mode int64, opts []Option) Entry {
	e := Entry{Header: tar.Header{
		Typeflag: typ,
		Name:     name,
		Mode:     mode,
		ModTime:  Epoch,
		Format:   tar.FormatPAX,
	}}
	for _, o := range opts {
		o(&e)
	}
	return e
}

// File is a regular file with the given content.
func File(name, content string, opts ...Option) Entry {
	e := entry(tar.TypeReg, name, 0o644, nil)
	e.Body = []byte(content)
	e.Header.Size = int64(len(content))
	for _, o := range opts {
		o(&e)
	}
	return e
}

// Dir is a directory. A trailing slash is not added: tests choose the exact name.
func Dir(name string, opts ...Option) Entry { return entry(tar.TypeDir, name, 0o755, opts) }

// Symlink is a symbolic link name -> target (target stored verbatim).
func Symlink(name, target string, opts ...Option) Entry {
	e := entry(tar.TypeSymlink, name, 0o777, opts)
	e.Header.Linkname = target
	return e
}

// Link is a hard link name -> target (target is a path in the archive).
func Link(name, target string, opts ...Option) Entry {
	e := entry(tar.TypeLink, name, 0o644, opts)
	e.Header.Linkname = target
	return e
}

// Whiteout is the file DIR/.wh.BASE that deletes DIR/BASE from lower layers. name is the
// path being deleted ("a/b" gives "a/.wh.b").
func Whiteout(name string, opts ...Option) Entry {
	dir, base := split(name)
	return entry(tar.TypeReg, dir+".wh."+base, 0o644, opts)
}

// Opaque is the marker dir/.wh..wh..opq that hides dir's lower-layer contents. dir "" is the root.
func Opaque(dir string, opts ...Option) Entry {
	if dir != "" && dir[len(dir)-1] != '/' {
		dir += "/"
	}
	return entry(tar.TypeReg, dir+".wh..wh..opq", 0o644, opts)
}

// Fifo is a named pipe.
func Fifo(name string, opts ...Option) Entry { return entry(tar.TypeFifo, name, 0o644, opts) }

// Char is a character device major:minor.
func Char(name string, major, minor int64, opts ...Option) Entry {
	e := entry(tar.TypeChar, name, 0o666, opts)
	e.Header.Devmajor, e.Header.Devminor = major, minor
	return e
}

// Block is a block device major:minor.
func Block(name string, major, minor int64, opts ...Option) Entry {
	e := entry(tar.TypeBlock, name, 0o660, opts)
	e.Header.Devmajor, e.Header.Devminor = major, minor
	return e
}

// Raw is an entry with an arbitrary type flag (GNU volume headers, sparse, unknown types).
func Raw(typ byte, name string, opts ...Option) Entry { return entry(typ, name, 0o644, opts) }

// Global is a PAX global header ('g') carrying records and no file.
func Global(records map[string]string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeXGlobalHeader, PAXRecords: records, Format: tar.FormatPAX}}
}

// Tar writes the entries, in order, as one tar stream. It panics on an impossible header, which
// in a test is a bug in the test.
func Tar(entries ...Entry) []byte {
	var buf bytes.Buffer
	if err := Write(&buf, entries...); err != nil {
		panic("tartest: " + err.Error())
	}
	return buf.Bytes()
}

// Write is [Tar] to a writer.
func Write(w io.Writer, entries ...Entry) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		h := e.Header
		if err := tw.WriteHeader(&h); err != nil {
			return err
		}
		if len(e.Body) > 0 {
			if _, err := tw.Write(e.Body); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

// Reader is [Tar] as an io.Reader.
func Reader(entries ...Entry) io.Reader { return bytes.NewReader(Tar(entries...)) }

func split(name string) (dir, base string) {
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '/' {
			return name[:i+1], name[i+1:]
		}
	}
	return "", name
}
