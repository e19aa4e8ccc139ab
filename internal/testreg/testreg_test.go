package testreg_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/imgrun/imgrun/internal/testreg"
)

func TestBuildersAreDeterministic(t *testing.T) {
	mk := func() string {
		img := testreg.Image(t, "linux/amd64", testreg.Layer(t,
			testreg.File{Name: "d/"}, testreg.File{Name: "d/f", Body: "x"}, testreg.File{Name: "l", Type: '2', Linkname: "d/f"}))
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d.String()
	}
	if a, b := mk(), mk(); a != b {
		t.Fatalf("same files gave %s and %s", a, b)
	}
}

func TestFaultsAndCounter(t *testing.T) {
	reg := testreg.New(t, testreg.WithFaults(testreg.Fault{Kind: testreg.KindManifest, Times: 1, Action: testreg.Status(500)}))
	reg.Push(t, "app:1", testreg.Image(t, "linux/amd64"))
	get := func() int {
		resp, err := http.Get(reg.URL + "/v2/app/manifests/1")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if a, b := get(), get(); a != 500 || b != 200 {
		t.Fatalf("statuses %d, %d; want 500 then 200", a, b)
	}
	if n := reg.Counter.Count(http.MethodGet, testreg.KindManifest); n != 2 {
		t.Fatalf("counted %d manifest GETs, want 2", n)
	}
}

func TestTokenRealm(t *testing.T) {
	reg := testreg.New(t, testreg.WithToken(testreg.TokenConfig{}))
	resp, err := http.Get(reg.URL + "/v2/library/node/manifests/latest")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := `Bearer realm="http://` + reg.Host + `/token",service="testreg",scope="repository:library/node:pull"`
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != want {
		t.Fatalf("got %d %q, want 401 %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), want)
	}
}
