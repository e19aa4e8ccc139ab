package run

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestResolveUser(t *testing.T) {
	passwd := []byte("root:x:0:0:root:/root:/bin/sh\n" +
		"# comment\n" +
		"broken:x:notanumber:0::/:/bin/sh\n" +
		"big:x:2147483648:0::/:/bin/sh\n" +
		"app:x:1000:1000:app:/home/app:/bin/sh\n" +
		"nohome:x:1001:1001\n")
	group := []byte("root:x:0:\napp:x:1000:\nextra:x:2000:app,other\nwheel:x:10:root\n")
	tests := []struct {
		spec string
		want execUser
		err  bool
	}{
		{"", execUser{UID: 0, GID: 0, Groups: []uint32{0, 10}, Home: "/root"}, false},
		{"root", execUser{UID: 0, GID: 0, Groups: []uint32{0, 10}, Home: "/root"}, false},
		{"app", execUser{UID: 1000, GID: 1000, Groups: []uint32{1000, 2000}, Home: "/home/app"}, false},
		{"1000", execUser{UID: 1000, GID: 1000, Groups: []uint32{1000, 2000}, Home: "/home/app"}, false},
		{"app:extra", execUser{UID: 1000, GID: 2000, Groups: []uint32{2000}, Home: "/home/app"}, false},
		{"app:0", execUser{UID: 1000, GID: 0, Groups: []uint32{0, 2000}, Home: "/home/app"}, false},
		{"4242", execUser{UID: 4242, GID: 0, Groups: []uint32{0}, Home: "/"}, false},
		{"4242:4343", execUser{UID: 4242, GID: 4343, Groups: []uint32{4343}, Home: "/"}, false},
		{"nohome", execUser{UID: 1001, GID: 1001, Groups: []uint32{1001}, Home: "/"}, false},
		{":2000", execUser{UID: 0, GID: 2000, Groups: []uint32{2000, 10}, Home: "/root"}, false},
		{"nosuch", execUser{}, true},
		{"app:nosuch", execUser{}, true},
		{"broken", execUser{}, true}, // a malformed line never resolves, and never to root
		{"big", execUser{}, true},
		{"405:2147483648", execUser{}, true},
		{"-1000", execUser{}, true},
		{"+1000", execUser{}, true},
		{"4294967296", execUser{}, true},
		{"4294967295", execUser{}, true},
		{"app:", execUser{}, true},
	}
	for _, tc := range tests {
		got, err := resolveUser(tc.spec, passwd, group)
		if tc.err {
			if !errors.Is(err, ErrUnknownUser) {
				t.Errorf("%q: err = %v, want ErrUnknownUser (got %+v)", tc.spec, err, got)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: got %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
	}
	// Without /etc/passwd numbers still work and names do not.
	if u, err := resolveUser("5:6", nil, nil); err != nil || u.UID != 5 || u.GID != 6 {
		t.Errorf("no passwd, 5:6: %+v %v", u, err)
	}
	if _, err := resolveUser("app", nil, nil); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("no passwd, app: %v", err)
	}
	// A giant line is cut off by the scanner's bound rather than exhausting memory.
	huge := []byte("app:x:1000:1000::/:" + strings.Repeat("x", maxUserFileBytes+10) + "\n")
	if u, err := resolveUser("app", huge, nil); err == nil {
		t.Errorf("huge passwd line resolved: %+v", u)
	}
}
