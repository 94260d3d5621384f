//go:build linux

package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// accountFiles are the files lab accounts are appended to, with the line
// each account adds. gshadow is optional (not every machine has one).
var accountFiles = []string{"passwd", "shadow", "group", "gshadow"}

// writeAccounts appends the spec's users and groups to the host's copies
// of the account files in the /etc overlay's upper layer. The copies start
// from the machine's files (or a declared file of the same path), keep
// their modes and owners (shadow stays 0640 root:shadow), and never touch
// the machine's own files: the overlay shows the upper copy instead.
func writeAccounts(ov overlay, spec Spec) error {
	if ov.Target != "/etc" || (len(spec.Users) == 0 && len(spec.Groups) == 0) {
		return nil
	}
	groups, err := accountGroups(spec)
	if err != nil {
		return err
	}
	members := map[string][]string{}
	for _, u := range spec.Users {
		for _, g := range u.Groups {
			members[g] = append(members[g], u.Name)
		}
	}
	byName := map[string]int{}
	for _, g := range groups {
		byName[g.Name] = g.GID
	}
	days := time.Now().Unix() / 86400
	add := map[string][]string{}
	for _, g := range groups {
		m := strings.Join(members[g.Name], ",")
		add["group"] = append(add["group"], fmt.Sprintf("%s:x:%d:%s", g.Name, g.GID, m))
		add["gshadow"] = append(add["gshadow"], fmt.Sprintf("%s:!::%s", g.Name, m))
	}
	for _, u := range spec.Users {
		home, shell := u.Home, u.Shell
		if home == "" {
			home = "/home/" + u.Name
		}
		if shell == "" {
			shell = "/bin/bash"
		}
		group := u.Group
		if group == "" {
			group = u.Name
		}
		add["passwd"] = append(add["passwd"], fmt.Sprintf("%s:x:%d:%d:%s lab user:%s:%s", u.Name, u.UID, byName[group], u.Name, home, shell))
		// A locked password: root (the learner) becomes the user with su
		// or runuser; nobody logs in with a password.
		add["shadow"] = append(add["shadow"], fmt.Sprintf("%s:!:%d:0:99999:7:::", u.Name, days))
	}
	for _, name := range accountFiles {
		if err := appendAccounts(ov, name, add[name]); err != nil {
			return fmt.Errorf("lab accounts: %w", err)
		}
	}
	return nil
}

// accountGroups returns the declared groups plus each user's own group,
// after checking every reference and every clash with the machine's
// accounts (a lab account that shadows a machine one would make `ls -l`
// lie about files shared with the machine).
func accountGroups(spec Spec) ([]Group, error) {
	machineUsers, err := accountIDs("/etc/passwd")
	if err != nil {
		return nil, err
	}
	machineGroups, err := accountIDs("/etc/group")
	if err != nil {
		return nil, err
	}
	groups := append([]Group(nil), spec.Groups...)
	for _, u := range spec.Users {
		if u.Group == "" {
			groups = append(groups, Group{Name: u.Name, GID: u.UID})
		}
	}
	names, gids := map[string]bool{}, map[int]bool{}
	for _, g := range groups {
		if err := checkAccount("group", g.Name, g.GID, machineGroups); err != nil {
			return nil, err
		}
		if names[g.Name] || gids[g.GID] {
			return nil, fmt.Errorf("lab group %s (gid %d) is declared twice", g.Name, g.GID)
		}
		names[g.Name], gids[g.GID] = true, true
	}
	unames, uids := map[string]bool{}, map[int]bool{}
	for _, u := range spec.Users {
		if err := checkAccount("user", u.Name, u.UID, machineUsers); err != nil {
			return nil, err
		}
		if unames[u.Name] || uids[u.UID] {
			return nil, fmt.Errorf("lab user %s (uid %d) is declared twice", u.Name, u.UID)
		}
		unames[u.Name], uids[u.UID] = true, true
		for _, g := range append([]string{u.Group}, u.Groups...) {
			if g != "" && !names[g] {
				return nil, fmt.Errorf("lab user %s: group %q is not a lab group of the host", u.Name, g)
			}
		}
	}
	return groups, nil
}

func checkAccount(what, name string, id int, machine map[string]int) error {
	if name == "" || strings.ContainsAny(name, ":\n,") || id <= 0 {
		return fmt.Errorf("lab %s %q (id %d): invalid", what, name, id)
	}
	if mid, ok := machine[name]; ok {
		return fmt.Errorf("lab %s %s: the machine already has a %s of that name (id %d); choose another name", what, name, what, mid)
	}
	for mname, mid := range machine {
		if mid == id {
			return fmt.Errorf("lab %s %s: id %d is the machine's %s %s; choose another id", what, name, id, what, mname)
		}
	}
	return nil
}

// accountIDs reads name -> id from a passwd or group file.
func accountIDs(file string) (map[string]int, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read the machine's %s: %w", file, err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 3 {
			continue
		}
		if id, err := strconv.Atoi(f[2]); err == nil {
			out[f[0]] = id
		}
	}
	return out, nil
}

// appendAccounts writes upper/<name> = (declared copy or machine file) +
// lines, with the machine file's mode and owner.
func appendAccounts(ov overlay, name string, lines []string) error {
	machine := filepath.Join(ov.Target, name)
	_, err := os.Stat(machine)
	if errors.Is(err, os.ErrNotExist) && name == "gshadow" {
		return nil
	}
	if err != nil {
		return err
	}
	upper := filepath.Join(ov.Upper, name)
	base, err := os.ReadFile(upper) // a declared file of the same path wins
	if errors.Is(err, os.ErrNotExist) {
		base, err = os.ReadFile(machine)
	}
	if err != nil {
		return err
	}
	if len(lines) == 0 {
		return nil
	}
	var buf bytes.Buffer
	buf.Write(base)
	if len(base) > 0 && base[len(base)-1] != '\n' {
		buf.WriteByte('\n')
	}
	for _, l := range lines {
		buf.WriteString(l + "\n")
	}
	tmp := upper + ".labctl-tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o600); err != nil {
		return err
	}
	if err := copyAttrs(machine, tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, upper)
}
