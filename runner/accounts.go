package runner

import (
	"strings"

	"github.com/labctl/labctl/labs"
	"github.com/labctl/labctl/runner/sandbox"
)

// hostAccountsAndMounts turns a host's lab-local users, groups and
// filesystems into the sandbox's terms.
func hostAccountsAndMounts(h *labs.Host) ([]sandbox.User, []sandbox.Group, []sandbox.Mount) {
	var users []sandbox.User
	for _, u := range h.Users {
		users = append(users, sandbox.User{Name: u.Name, UID: u.UID, Group: u.Group, Groups: u.Groups, Home: u.Home, Shell: u.Shell})
	}
	var groups []sandbox.Group
	for _, g := range h.Groups {
		groups = append(groups, sandbox.Group{Name: g.Name, GID: g.GID})
	}
	var mounts []sandbox.Mount
	for _, m := range h.Mounts {
		mounts = append(mounts, sandbox.Mount{Path: m.Path, Type: m.Type, Size: int64(m.Size), Inodes: int64(m.Inodes), Options: m.Options})
	}
	return users, groups, mounts
}

// labOwner resolves a declared file's "user[:group]" against the host's
// lab-local accounts first (they exist only in the host's view, so the
// machine cannot resolve them), then the machine's.
func labOwner(h *labs.Host, s string) (uid, gid int, err error) {
	name, group, hasGroup := strings.Cut(s, ":")
	uid, gid, found := -1, -1, false
	for _, u := range h.Users {
		if u.Name == name {
			uid, found = u.UID, true
			gid = u.UID // the user's own group unless it names one
			if u.Group != "" {
				gid = labGID(h, u.Group)
			}
		}
	}
	if hasGroup {
		if g := labGID(h, group); g >= 0 {
			if !found {
				if uid, _, err = owner(name); err != nil {
					return 0, 0, err
				}
			}
			return uid, g, nil
		}
		if found {
			_, g, err := owner("root:" + group)
			return uid, g, err
		}
	}
	if found {
		return uid, gid, nil
	}
	return owner(s)
}

// labGID returns the gid of a lab group or of a lab user's own group; -1
// when the host declares neither.
func labGID(h *labs.Host, name string) int {
	for _, g := range h.Groups {
		if g.Name == name {
			return g.GID
		}
	}
	for _, u := range h.Users {
		if u.Name == name && u.Group == "" {
			return u.UID
		}
	}
	return -1
}
