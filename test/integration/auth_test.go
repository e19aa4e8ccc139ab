//go:build integration

package integration

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/imgrun/imgrun/internal/distreg"
	"github.com/imgrun/imgrun/internal/testimage"
	"github.com/imgrun/imgrun/pkg/registry"
)

// TestBasicAuth pulls from a real registry behind htpasswd basic auth with credentials
// from a docker config.json (DOCKER_CONFIG), as `docker login` leaves them.
func TestBasicAuth(t *testing.T) {
	reg := distreg.Start(t, distreg.WithBasicAuth("alice", "s3cret"))
	want := testimage.Tricky(t)
	reg.Push(t, "private/app:1", want)

	tests := []struct {
		name    string
		config  string // config.json; "" = none
		wantErr error
	}{
		{"right credentials", authConfig(reg.Host, "alice", "s3cret"), nil},
		{"wrong password", authConfig(reg.Host, "alice", "wrong"), registry.ErrUnauthorized},
		{"unknown user", authConfig(reg.Host, "mallory", "s3cret"), registry.ErrUnauthorized},
		{"no credentials", "", registry.ErrUnauthorized},
		{"credentials for another host", authConfig("127.0.0.1:1", "alice", "s3cret"), registry.ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.config != "" {
				if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(tt.config), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			t.Setenv("DOCKER_CONFIG", dir)
			img, err := pull(t, openStore(t), reg.Ref("private/app:1"), noRetry)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("pull: %v", err)
				}
				checkImage(t, img, want)
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("pull error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func authConfig(host, user, pass string) string {
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	return fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)
}
