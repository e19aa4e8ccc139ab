package layers

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// syncDir fsyncs a directory so that a rename or create inside it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}

// isDiskFull reports whether err is the filesystem being full (ENOSPC, EDQUOT).
func isDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// diskFull turns a full-filesystem error into a *DiskFullError naming path, and returns
// any other error unchanged.
func diskFull(path string, err error) error {
	if err != nil && isDiskFull(err) {
		return &DiskFullError{Path: path, Err: err}
	}
	return err
}

// writeFileAtomic writes data to path through a temporary file in the same directory,
// fsynced and renamed into place, then fsyncs the directory. Readers see the old or the
// new content, never a mix.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, perm)
	if err != nil {
		return diskFull(tmp, err)
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return diskFull(tmp, fmt.Errorf("write %s: %w", tmp, err))
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return diskFull(dir, syncDir(dir))
}
