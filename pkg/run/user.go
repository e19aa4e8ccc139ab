package run

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// maxUserFileBytes bounds how much of the image's /etc/passwd or /etc/group is read (C2 in
// THREATS.md: a huge or endless file must not stall or exhaust the launcher).
const maxUserFileBytes = 4 << 20

// execUser is the identity the command runs as.
type execUser struct {
	UID, GID uint32
	Groups   []uint32 // supplementary groups, the primary one first
	Home     string
}

type passwdEntry struct {
	name     string
	uid, gid uint32
	home     string
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

// resolveUser resolves docker's -u syntax, user[:group] with names or numbers, against the
// contents of the image's /etc/passwd and /etc/group (nil when the image has none). Numbers
// must be in 0..2^31-1 (C1: a value that overflows must never become root); a name that is not
// found is an error, never a default.
func resolveUser(spec string, passwd, group []byte) (execUser, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if hasGroup && groupPart == "" {
		return execUser{}, fmt.Errorf("%w: %q: empty group", ErrUnknownUser, spec)
	}
	users := parsePasswd(passwd)
	u := execUser{Home: "/"}
	var name string
	switch id, isNum, err := parseID(userPart); {
	case err != nil:
		return execUser{}, err
	case userPart == "":
		name = lookupUID(users, 0, &u)
	case isNum:
		u.UID = id
		name = lookupUID(users, id, &u)
	default:
		i := slices.IndexFunc(users, func(p passwdEntry) bool { return p.name == userPart })
		if i < 0 {
			return execUser{}, fmt.Errorf("%w: unable to find user %s: no matching entries in passwd file", ErrUnknownUser, userPart)
		}
		name = userPart
		u.UID, u.GID, u.Home = users[i].uid, users[i].gid, users[i].home
	}

	groups := parseGroup(group)
	if hasGroup {
		id, isNum, err := parseID(groupPart)
		switch {
		case err != nil:
			return execUser{}, err
		case isNum:
			u.GID = id
		default:
			i := slices.IndexFunc(groups, func(g groupEntry) bool { return g.name == groupPart })
			if i < 0 {
				return execUser{}, fmt.Errorf("%w: unable to find group %s: no matching entries in group file", ErrUnknownUser, groupPart)
			}
			u.GID = groups[i].gid
		}
	}
	u.Groups = []uint32{u.GID}
	if name != "" {
		for _, g := range groups {
			if slices.Contains(g.members, name) && !slices.Contains(u.Groups, g.gid) {
				u.Groups = append(u.Groups, g.gid)
			}
		}
	}
	if u.Home == "" {
		u.Home = "/"
	}
	return u, nil
}

// lookupUID fills gid and home from the first passwd entry with uid and returns its name.
func lookupUID(users []passwdEntry, uid uint32, u *execUser) string {
	for _, p := range users {
		if p.uid == uid {
			u.GID, u.Home = p.gid, p.home
			return p.name
		}
	}
	return ""
}

// parseID reports whether s is a number and, if so, its value. Signs and values above
// math.MaxInt32 are errors: docker accepts 0..2147483647 only.
func parseID(s string) (uint32, bool, error) {
	if s == "" {
		return 0, false, nil
	}
	digits := strings.TrimLeft(s, "+-")
	if digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, false, nil // a name
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > math.MaxInt32 {
		return 0, false, fmt.Errorf("%w: %q: uids and gids must be in range 0-%d", ErrUnknownUser, s, math.MaxInt32)
	}
	return uint32(n), true, nil
}

// parsePasswd parses name:password:uid:gid:gecos:home:shell lines, skipping malformed ones.
func parsePasswd(b []byte) []passwdEntry {
	var out []passwdEntry
	eachLine(b, func(f []string) {
		if len(f) < 4 || f[0] == "" {
			return
		}
		uid, ok1 := parseField(f[2])
		gid, ok2 := parseField(f[3])
		if !ok1 || !ok2 {
			return
		}
		p := passwdEntry{name: f[0], uid: uid, gid: gid}
		if len(f) > 5 {
			p.home = f[5]
		}
		out = append(out, p)
	})
	return out
}

// parseGroup parses name:password:gid:member,member lines, skipping malformed ones.
func parseGroup(b []byte) []groupEntry {
	var out []groupEntry
	eachLine(b, func(f []string) {
		if len(f) < 3 || f[0] == "" {
			return
		}
		gid, ok := parseField(f[2])
		if !ok {
			return
		}
		g := groupEntry{name: f[0], gid: gid}
		if len(f) > 3 && f[3] != "" {
			g.members = strings.Split(f[3], ",")
		}
		out = append(out, g)
	})
	return out
}

func parseField(s string) (uint32, bool) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	return uint32(n), err == nil && n <= math.MaxInt32
}

func eachLine(b []byte, fn func(fields []string)) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), maxUserFileBytes)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fn(strings.Split(line, ":"))
	}
}
