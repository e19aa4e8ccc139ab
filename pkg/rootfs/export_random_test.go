package rootfs_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/imgrun/imgrun/internal/tartest"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

// randomImage generates a multi-layer image of whiteouts, opaque directories, type changes,
// and hard links within and across layers over a small namespace, so that paths collide
// often. It keeps to what docker-built layers can contain (no entry below a symlink, no
// repeated path in one layer), where Export and Flatten must agree exactly, plus whiteouts
// after the entries of their layer, which hide only what lower layers put there.
func randomImage(r *rand.Rand) []tl { return randomImageWith(r, true) }

// randomImageWith is randomImage, with or without whiteouts placed after the entries of their
// own layer (umoci, the integration oracle, applies those in tar order as docker does, where
// imgrun follows the OCI image-spec: see TestExportMatchesUmoci).
func randomImageWith(r *rand.Rand, sameLayerWhiteouts bool) []tl {
	type node struct {
		kind  byte // 'd', 'f', 'l' (symlink), 'p' (fifo)
		layer int
	}
	state := map[string]node{}
	names := []string{"a", "b", "c"}
	randPath := func() string {
		depth := 1 + r.IntN(3)
		parts := make([]string, depth)
		for i := range parts {
			parts[i] = names[r.IntN(len(names))]
		}
		return strings.Join(parts, "/")
	}
	// parentsOK: every existing ancestor is a directory.
	parentsOK := func(p string) bool {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if n, ok := state[d]; ok && n.kind != 'd' {
				return false
			}
		}
		return true
	}
	removeTree := func(p string, onlyBelow bool) {
		for q := range state {
			if strings.HasPrefix(q, p+"/") || (!onlyBelow && q == p) {
				delete(state, q)
			}
		}
	}
	modes := []int64{0o644, 0o600, 0o755, 0o4755, 0o444}
	var layers []tl
	for li := range 2 + r.IntN(4) {
		var whs, opq, ents tl
		var opqDirs []string
		touched := map[string]bool{}
		// Whiteouts and opaque markers of lower paths first, in the model.
		for range r.IntN(3) {
			var lower []string
			for p, n := range state {
				if n.layer < li && !touched[p] {
					lower = append(lower, p)
				}
			}
			if len(lower) == 0 {
				break
			}
			slices.Sort(lower)
			p := lower[r.IntN(len(lower))]
			if state[p].kind == 'd' && r.IntN(2) == 0 {
				// Apply hides the lower children at the end of the layer: so does the model.
				opq = append(opq, tartest.Opaque(p))
				opqDirs = append(opqDirs, p)
			} else {
				whs = append(whs, tartest.Whiteout(p))
				removeTree(p, false)
			}
			// Nothing in this layer may replace the marker's directories (Apply would
			// follow a symlink put there; Export takes names literally).
			for d := p; d != "."; d = path.Dir(d) {
				touched[d] = true
			}
		}
		for range 3 + r.IntN(8) {
			p := randPath()
			if touched[p] || !parentsOK(p) {
				continue
			}
			// Implicit parents are created as directories by this layer.
			for d := path.Dir(p); d != "."; d = path.Dir(d) {
				if _, ok := state[d]; !ok {
					state[d] = node{'d', li}
				}
				touched[d] = true
			}
			if n, ok := state[p]; ok && n.kind == 'd' {
				// Replacing a directory is fine unless this layer put something below it.
				below := false
				for q, m := range state {
					if strings.HasPrefix(q, p+"/") && m.layer == li {
						below = true
					}
				}
				if below {
					continue
				}
			}
			touched[p] = true
			opts := []tartest.Option{tartest.Mode(modes[r.IntN(len(modes))])}
			if r.IntN(3) == 0 {
				opts = append(opts, tartest.Owner(1000, 1000+r.IntN(2)))
			}
			var files []string
			for q, n := range state {
				if n.kind == 'f' && q != p && !strings.HasPrefix(q, p+"/") {
					files = append(files, q)
				}
			}
			slices.Sort(files)
			switch k := r.IntN(10); {
			case k < 4:
				removeTree(p, false)
				ents = append(ents, tartest.File(p, fmt.Sprintf("%s@%d.%d", p, li, r.IntN(100)), opts...))
				state[p] = node{'f', li}
			case k < 6:
				if n, ok := state[p]; !ok || n.kind != 'd' {
					removeTree(p, false)
				}
				ents = append(ents, tartest.Dir(p, tartest.Mode(0o755)))
				state[p] = node{'d', li}
			case k < 7:
				removeTree(p, false)
				ents = append(ents, tartest.Symlink(p, names[r.IntN(3)]))
				state[p] = node{'l', li}
			case k < 8 && os.Geteuid() == 0:
				removeTree(p, false)
				ents = append(ents, tartest.Fifo(p))
				state[p] = node{'p', li}
			default:
				if len(files) == 0 {
					continue
				}
				removeTree(p, false)
				ents = append(ents, tartest.Link(p, files[r.IntN(len(files))]))
				state[p] = node{'f', li}
			}
		}
		// Whiteouts after the entries of their layer only apply to the lower layers (OCI
		// image-spec): a file or symlink of this layer stays, a directory this layer listed or
		// wrote into loses only its lower contents.
		var late tl
		for range r.IntN(3) {
			if !sameLayerWhiteouts {
				break
			}
			var cands []string
			for p := range state {
				if parentsOK(p) {
					cands = append(cands, p)
				}
			}
			if len(cands) == 0 {
				break
			}
			slices.Sort(cands)
			p := cands[r.IntN(len(cands))]
			late = append(late, tartest.Whiteout(p))
			mine := state[p].layer == li
			for q, n := range state {
				if strings.HasPrefix(q, p+"/") && n.layer == li {
					mine = true
				}
			}
			if !mine {
				removeTree(p, false)
				continue
			}
			for q, n := range state {
				if strings.HasPrefix(q, p+"/") && n.layer < li {
					delete(state, q)
				}
			}
			n := state[p]
			n.layer = li
			state[p] = n
		}
		for _, d := range opqDirs {
			for q, n := range state {
				if strings.HasPrefix(q, d+"/") && n.layer < li {
					delete(state, q)
				}
			}
		}
		// Opaque markers may come anywhere in their layer: put some last.
		if r.IntN(2) == 0 {
			layers = append(layers, slices.Concat(whs, ents, late, opq))
		} else {
			layers = append(layers, slices.Concat(whs, opq, ents, late))
		}
	}
	return layers
}

// TestExportMatchesFlattenRandom compares Export with Flatten on random images.
// As root it also runs rootless: TestRootless re-runs it as nobody (owners are then left out
// of the comparison).
func TestExportMatchesFlattenRandom(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 50
	}
	for seed := range n {
		r := rand.New(rand.NewPCG(uint64(seed), 7))
		ls := randomImage(r)
		layers := memLayers(ls...)
		dir := t.TempDir() + "/rootfs"
		ferr := rootfs.Flatten(t.Context(), dir, layers)
		var buf bytes.Buffer
		eerr := rootfs.Export(t.Context(), &buf, layers)
		var d string
		switch {
		case ferr != nil || eerr != nil:
			d = fmt.Sprintf("Flatten: %v\nExport: %v", ferr, eerr)
		default:
			d = diffMaps(tarTree(t, buf.Bytes()), diskTree(t, dir))
		}
		if d != "" {
			t.Fatalf("seed %d: export differs from Flatten:\n%s\nlayers:\n%s", seed, d, describeLayers(ls))
		}
	}
}
