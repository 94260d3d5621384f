//go:build linux

package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
)

// overlay is one private copy-on-write view of a machine directory: the
// machine's directory is the read-only lower layer, everything the host
// writes lands in upper, inside the host's state dir.
type overlay struct {
	Target string `json:"target"` // machine directory it covers, e.g. /etc
	Upper  string `json:"upper"`
	Work   string `json:"work"`
}

// notOverlayable are top-level directories a declared file cannot live in:
// kernel filesystems the host mounts fresh, and the private /tmp tmpfs.
var notOverlayable = map[string]string{
	"proc": "it is the host's own procfs",
	"sys":  "it is the host's own sysfs",
	"dev":  "device nodes are shared with the machine",
	"tmp":  "it is the host's private tmpfs",
	"run":  "it holds labctl's state and the named network namespaces",
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$`)

// validateSpec checks everything Start needs before it creates anything.
func validateSpec(spec Spec) error {
	switch {
	case !nameRE.MatchString(spec.Instance):
		return fmt.Errorf("instance id %q: want lower-case letters, digits, - and _", spec.Instance)
	case !nameRE.MatchString(spec.Name) || len(spec.Name) > 12:
		return fmt.Errorf("host name %q: want at most 12 lower-case letters, digits, - and _", spec.Name)
	case spec.Memory <= 0:
		return fmt.Errorf("host %s: memory limit must be > 0, got %d", spec.Name, spec.Memory)
	case spec.Pids <= 0:
		return fmt.Errorf("host %s: pids limit must be > 0, got %d", spec.Name, spec.Pids)
	case spec.CPU < 0:
		return fmt.Errorf("host %s: cpu must be >= 0, got %v", spec.Name, spec.CPU)
	case spec.NetNSName == "" || strings.ContainsAny(spec.NetNSName, "/\x00") || spec.NetNSName == "." || spec.NetNSName == "..":
		return fmt.Errorf("host %s: invalid netns name %q", spec.Name, spec.NetNSName)
	case len(spec.Hostname) > 64:
		return fmt.Errorf("host %s: hostname %q longer than 64 bytes", spec.Name, spec.Hostname)
	case strings.ContainsAny(spec.Lab, " \t\n\x00"):
		return fmt.Errorf("lab name %q contains white space", spec.Lab)
	}
	if st, err := os.Stat(spec.StateDir); err != nil || !st.IsDir() || !filepath.IsAbs(spec.StateDir) {
		return fmt.Errorf("host %s: state dir %q must be an existing absolute directory (%v)", spec.Name, spec.StateDir, err)
	}
	for _, m := range spec.Mounts {
		if err := validateMount(m); err != nil {
			return fmt.Errorf("host %s: %w", spec.Name, err)
		}
	}
	for _, f := range spec.Files {
		if _, err := topLevel(f.Path); err != nil {
			return fmt.Errorf("host %s: file %s: %w", spec.Name, f.Path, err)
		}
	}
	return nil
}

// topLevel returns the machine directory whose overlay holds path.
func topLevel(path string) (string, error) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return "", errors.New("want an absolute, clean path")
	}
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(parts) < 2 {
		return "", errors.New("files directly in / are not supported; put it in a directory such as /etc or /srv")
	}
	if why, bad := notOverlayable[parts[0]]; bad {
		return "", fmt.Errorf("cannot place files under /%s: %s", parts[0], why)
	}
	top := "/" + parts[0]
	st, err := os.Lstat(top)
	if err != nil {
		// The overlay needs a mountpoint and labctl never creates
		// directories in the machine's own filesystem.
		return "", fmt.Errorf("%s does not exist on this machine, so the host cannot get a private copy of it", top)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%s is not a directory on this machine (a symlink?); use the path it points to", top)
	}
	return top, nil
}

// privateTops are the machine's top-level directories every host gets a
// private copy-on-write view of (when they are real directories here), so
// a learner or a fault can create and change anything under them, and
// mount lab-local filesystems there, without touching the machine.
var privateTops = []string{"/var", "/srv", "/opt", "/home", "/root", "/usr"}

// prepareOverlays creates the upper layers in the state dir: /etc always
// (the host's own resolv.conf and hosts, and learner edits that never reach
// the machine), privateTops, plus the top-level directory of every
// declared file.
func prepareOverlays(spec Spec) ([]overlay, error) {
	byTop := map[string][]File{"/etc": nil}
	for _, top := range privateTops {
		st, err := os.Lstat(top)
		// An overlay cannot hold its own upper layer: a state dir under
		// one of these keeps the machine's directory shared.
		if err != nil || !st.IsDir() || strings.HasPrefix(spec.StateDir+"/", top+"/") {
			continue
		}
		byTop[top] = nil
	}
	for _, f := range spec.Files {
		top, err := topLevel(f.Path)
		if err != nil {
			return nil, fmt.Errorf("file %s: %w", f.Path, err)
		}
		byTop[top] = append(byTop[top], f)
	}
	var etc []File
	if spec.ResolvConf != nil {
		// A regular file in the upper layer also replaces a machine
		// resolv.conf that is a symlink (into /run/systemd/resolve...).
		etc = append(etc, File{Path: "/etc/resolv.conf", Content: spec.ResolvConf, Mode: 0o644})
	}
	if spec.EtcHosts != nil {
		etc = append(etc, File{Path: "/etc/hosts", Content: spec.EtcHosts, Mode: 0o644})
	}
	byTop["/etc"] = append(etc, byTop["/etc"]...) // declared files win

	tops := make([]string, 0, len(byTop))
	for t := range byTop {
		tops = append(tops, t)
	}
	sort.Strings(tops)
	var out []overlay
	for _, top := range tops {
		base := filepath.Join(spec.StateDir, "overlay", strings.TrimPrefix(top, "/"))
		ov := overlay{Target: top, Upper: filepath.Join(base, "upper"), Work: filepath.Join(base, "work")}
		for _, d := range []string{ov.Upper, ov.Work} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, fmt.Errorf("create overlay dir: %w", err)
			}
		}
		// The upper root's attributes win over the lower's: copy them so
		// `ls -ld /etc` inside looks like the machine's.
		if err := copyAttrs(top, ov.Upper); err != nil {
			return nil, err
		}
		for _, f := range byTop[top] {
			if err := placeFile(ov, f); err != nil {
				return nil, fmt.Errorf("file %s: %w", f.Path, err)
			}
		}
		if err := writeAccounts(ov, spec); err != nil {
			return nil, err
		}
		out = append(out, ov)
	}
	return out, nil
}

// placeFile writes f into the overlay's upper layer, creating the parent
// directories with the attributes of the machine's directories where they
// exist (so the merged view shows the machine's modes), root 0755 otherwise.
func placeFile(ov overlay, f File) error {
	rel, err := filepath.Rel(ov.Target, f.Path)
	if err != nil {
		return err
	}
	parts := strings.Split(rel, string(filepath.Separator))
	lower, upper := ov.Target, ov.Upper
	for _, p := range parts[:len(parts)-1] {
		lower, upper = filepath.Join(lower, p), filepath.Join(upper, p)
		if err := os.Mkdir(upper, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if err := copyAttrs(lower, upper); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	target := filepath.Join(ov.Upper, rel)
	mode := f.Mode & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
	if mode == 0 {
		mode = 0o644
	}
	// Remove first: a lower symlink copied up earlier, or a second
	// declaration of the same path (declared files override defaults).
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.WriteFile(target, f.Content, mode.Perm()); err != nil {
		return err
	}
	if err := os.Chown(target, f.UID, f.GID); err != nil {
		return err
	}
	// Chmod after chown: chown clears setuid/setgid bits.
	return os.Chmod(target, mode)
}

// copyAttrs gives dst the mode and owner of src.
func copyAttrs(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		if err := os.Lchown(dst, int(sys.Uid), int(sys.Gid)); err != nil {
			return err
		}
	}
	return os.Chmod(dst, st.Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky))
}
