package run

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// lookPath finds the command inside the run's root (the init calls it after pivot_root, so
// every path, and every symlink on the way, resolves inside the rootfs). Its messages are
// docker's: `exec: "nosuch": executable file not found in $PATH`.
func lookPath(file, pathEnv string) (string, error) {
	if strings.Contains(file, "/") {
		fi, err := os.Stat(file)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return "", withKind("notfound", fmt.Errorf("exec: %q: stat %s: no such file or directory", file, file))
		case err != nil:
			return "", withKind("notexec", fmt.Errorf("exec: %q: %v", file, err))
		case fi.IsDir():
			return "", withKind("notexec", fmt.Errorf("exec: %q: is a directory", file))
		case fi.Mode()&0o111 == 0:
			return "", withKind("notexec", fmt.Errorf("exec: %q: permission denied", file))
		}
		return file, nil
	}
	denied := false
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() {
			continue
		}
		if fi.Mode()&0o111 == 0 {
			denied = true
			continue
		}
		return p, nil
	}
	if denied {
		return "", withKind("notexec", fmt.Errorf("exec: %q: permission denied", file))
	}
	return "", withKind("notfound", fmt.Errorf("exec: %q: %w", file, ErrCommandNotFound))
}
