package registry_test

import (
	"encoding/base64"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgrun/imgrun/internal/testreg"
	"github.com/imgrun/imgrun/pkg/registry"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The default keychain reads DOCKER_CONFIG/config.json: both inline auths and
// credential helpers (docker-credential-NAME on PATH).
func TestDockerConfigCredentials(t *testing.T) {
	reg := testreg.New(t, testreg.WithToken(testreg.TokenConfig{User: "alice", Password: "s3cret"}))
	reg.Push(t, "private/app:1", smallImage(t, "linux/amd64"))

	t.Run("auths", func(t *testing.T) {
		dir := t.TempDir()
		auth := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
		writeFile(t, filepath.Join(dir, "config.json"), `{"auths":{"`+reg.Host+`":{"auth":"`+auth+`"}}}`, 0o600)
		t.Setenv("DOCKER_CONFIG", dir)
		resolveWithDefaultKeychain(t, reg)
	})
	t.Run("credHelpers", func(t *testing.T) {
		dir, bin := t.TempDir(), t.TempDir()
		writeFile(t, filepath.Join(dir, "config.json"), `{"credHelpers":{"`+reg.Host+`":"imgruntest"}}`, 0o600)
		writeFile(t, filepath.Join(bin, "docker-credential-imgruntest"),
			"#!/bin/sh\nread host\necho '{\"ServerURL\":\"'$host'\",\"Username\":\"alice\",\"Secret\":\"s3cret\"}'\n", 0o755)
		t.Setenv("DOCKER_CONFIG", dir)
		t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		resolveWithDefaultKeychain(t, reg)
	})
}

func resolveWithDefaultKeychain(t *testing.T, reg *testreg.Registry) {
	t.Helper()
	c, err := registry.New(registry.WithRetry(fastRetry))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open(t, c, reg.Ref("private/app:1")).Resolve(t.Context(), ocispec.Platform{}, nil); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, name, body string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(name, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
}

// A registry with a self-signed certificate is refused unless named with WithInsecure.
func TestInsecureTLS(t *testing.T) {
	plain := testreg.New(t)
	want := plain.Push(t, "app:1", smallImage(t, "linux/amd64"))
	srv := httptest.NewUnstartedServer(plain.Handler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "https://")

	if _, err := open(t, newClient(t), host+"/app:1").Resolve(t.Context(), ocispec.Platform{}, nil); err == nil {
		t.Fatal("an unverified certificate was accepted without WithInsecure")
	}
	img, err := open(t, newClient(t, registry.WithInsecure(host)), host+"/app:1").Resolve(t.Context(), ocispec.Platform{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.Descriptor.Digest.String() != want.String() {
		t.Errorf("digest %s", img.Descriptor.Digest)
	}
}
