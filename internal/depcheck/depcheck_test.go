// Package depcheck holds one test: it keeps imgrun's import graph pointing one way,
// cmd → run → rootfs → layers → registry, and keeps go-containerregistry inside pkg/registry.
package depcheck

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/imgrun/imgrun"

// forbidden lists, for each library package, the module packages it must never import (directly or not).
var forbidden = map[string][]string{
	"pkg/registry": {"pkg/layers", "pkg/rootfs", "pkg/run", "cmd/"},
	"pkg/layers":   {"pkg/rootfs", "pkg/run", "cmd/"},
	"pkg/rootfs":   {"pkg/run", "cmd/"},
	// pkg/run takes a rootfs path and an image config: it needs nothing of the pull/unpack side.
	"pkg/run": {"pkg/rootfs", "pkg/layers", "pkg/registry", "cmd/"},
}

type pkgInfo struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []pkgInfo {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", module+"/pkg/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkgInfo
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkgInfo
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages under pkg/")
	}
	return pkgs
}

func TestImportDirection(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(p.ImportPath, module+"/")
		for owner, bad := range forbidden {
			if rel != owner && !strings.HasPrefix(rel, owner+"/") {
				continue
			}
			for _, dep := range p.Deps {
				depRel, ok := strings.CutPrefix(dep, module+"/")
				if !ok {
					continue
				}
				for _, b := range bad {
					if depRel == strings.TrimSuffix(b, "/") || strings.HasPrefix(depRel, b) || strings.HasPrefix(depRel, b+"/") {
						t.Errorf("%s imports %s: imports must point cmd → run → rootfs → layers → registry", rel, depRel)
					}
				}
			}
		}
	}
}

// TestRegistryTypesStayInside keeps go-containerregistry an implementation detail of pkg/registry:
// other library packages exchange image-spec types.
func TestRegistryTypesStayInside(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(p.ImportPath, module+"/")
		if rel == "pkg/registry" || strings.HasPrefix(rel, "pkg/registry/") {
			continue
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, "github.com/google/go-containerregistry/") {
				t.Errorf("%s imports %s directly; only pkg/registry may", rel, imp)
			}
		}
	}
}
