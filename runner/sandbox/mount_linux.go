//go:build linux

package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/internal/reexec"
)

// Ledger data of lab-local filesystems.
type (
	imageRecord struct {
		Path string `json:"path"` // the image file, in a host's state dir
	}
	loopRecord struct {
		Image string `json:"image"` // the backing file that identifies the device
		Name  string `json:"name"`  // lo_file_name: labctl-<instance>-<host>-<n>
	}
)

// imageName is the only kind of file Release removes for KindImage.
var imageName = regexp.MustCompile(`^disk-[0-9]+\.img$`)

// mountFlags are the mount options that are flags, not filesystem data.
var mountFlags = map[string]uintptr{
	"ro": unix.MS_RDONLY, "noexec": unix.MS_NOEXEC, "nosuid": unix.MS_NOSUID,
	"nodev": unix.MS_NODEV, "noatime": unix.MS_NOATIME, "relatime": unix.MS_RELATIME,
	"sync": unix.MS_SYNCHRONOUS, "rw": 0,
}

// validateMount checks m before anything is created.
func validateMount(m Mount) error {
	switch {
	case !filepath.IsAbs(m.Path) || filepath.Clean(m.Path) != m.Path || m.Path == "/":
		return fmt.Errorf("mount %q: want an absolute, clean path below /", m.Path)
	case m.Type != "tmpfs" && m.Type != "ext4":
		return fmt.Errorf("mount %s: type %q: want tmpfs or ext4", m.Path, m.Type)
	case m.Size <= 0:
		return fmt.Errorf("mount %s: size must be > 0, got %d", m.Path, m.Size)
	case m.Inodes < 0 || (m.Inodes > 0 && m.Type != "ext4"):
		return fmt.Errorf("mount %s: inodes apply to ext4 only and must be >= 0", m.Path)
	case m.Type == "ext4" && m.Size < 1<<20:
		return fmt.Errorf("mount %s: an ext4 filesystem needs at least 1Mi, got %d bytes", m.Path, m.Size)
	}
	top := strings.SplitN(strings.TrimPrefix(m.Path, "/"), "/", 2)[0]
	if why, bad := notOverlayable[top]; bad && top != "tmp" {
		return fmt.Errorf("mount %s: cannot mount under /%s: %s", m.Path, top, why)
	}
	for _, o := range m.Options {
		if o == "" || strings.ContainsAny(o, ", \t\n") {
			return fmt.Errorf("mount %s: option %q: want one word per option", m.Path, o)
		}
	}
	return nil
}

// AddMount mounts a lab-local filesystem at m.Path inside the host's mount
// namespace only (the machine's mount table never shows it), creating the
// directory in the host's private view. An ext4 image lives in stateDir
// (sparse, made by mkfs.ext4) on a loop device that frees itself when the
// host's mount goes; both are recorded with rec before they are created,
// and Release (KindLoop, KindImage) removes them from the records alone.
// It works on a running host: faults call it.
func AddMount(ctx context.Context, h *Host, stateDir string, m Mount, rec Recorder) error {
	if err := validateMount(m); err != nil {
		return err
	}
	if !Alive(h) {
		return fmt.Errorf("mount %s: the host is not running", m.Path)
	}
	source, fstype, data := "tmpfs", "tmpfs", fmt.Sprintf("size=%d", m.Size)
	var flags uintptr = unix.MS_NOSUID | unix.MS_NODEV
	for _, o := range m.Options {
		if f, ok := mountFlags[o]; ok {
			flags |= f
		} else {
			data += "," + o
		}
	}
	if m.Type == "ext4" {
		data = strings.TrimPrefix(strings.TrimPrefix(data, fmt.Sprintf("size=%d", m.Size)), ",")
		dev, err := attachImage(ctx, h, stateDir, m, rec)
		if err != nil {
			return fmt.Errorf("mount %s: %w", m.Path, err)
		}
		// Closed once mounted: the mount holds the device, and autoclear
		// detaches it when the host's mount namespace goes.
		defer dev.Close()
		source, fstype = dev.Name(), "ext4"
	}
	err := mountInHost(ctx, h, mountParams{InitPID: h.InitPID, InitStartTime: h.InitStartTime, Source: source, Target: m.Path, FSType: fstype, Flags: flags, Data: data})
	if err != nil {
		return fmt.Errorf("mount %s: %w", m.Path, err)
	}
	return nil
}

// mkdirPrivate creates path (mkdir -p) in the current mount namespace, a
// host's, refusing to create anything in a directory shared with the
// machine: only below a private top-level directory (an overlay or tmpfs
// of the host) may new directories appear.
func mkdirPrivate(path string) error {
	if st, err := os.Stat(path); err == nil {
		if !st.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", path)
		}
		return nil
	}
	top := "/" + strings.SplitN(strings.TrimPrefix(path, "/"), "/", 2)[0]
	mounts, err := os.ReadFile("/proc/1/mountinfo") // the host's init: this namespace
	if err != nil {
		return fmt.Errorf("read the host's mounts: %w", err)
	}
	private := false
	for _, line := range strings.Split(string(mounts), "\n") {
		if e, ok := parseMountinfo(line); ok && e.mountpoint == top && (e.fstype == "overlay" || e.fstype == "tmpfs") {
			private = true
		}
	}
	if !private {
		return fmt.Errorf("%s does not exist and %s is shared with the machine; mount below a private directory (/etc, /var, /srv, /opt, /home, /root, /usr, /tmp)", path, top)
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

// mountEnv carries the sandbox-mount helper's parameters.
const mountEnv = "LABCTL_SANDBOX_MOUNT"

type mountParams struct {
	InitPID       int     `json:"init_pid"`
	InitStartTime uint64  `json:"init_start_time"`
	Source        string  `json:"source"`
	Target        string  `json:"target"`
	FSType        string  `json:"fstype"`
	Flags         uintptr `json:"flags"`
	Data          string  `json:"data"`
}

// mountInHost mounts in the host's mount namespace through a helper
// process: a thread of this process that entered it would be the main
// thread at times, and then /proc/self would show the host's mounts to
// the rest of labctl for good.
func mountInHost(ctx context.Context, h *Host, p mountParams) error {
	raw, err := json.Marshal(p)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, reexec.Self())
	cmd.Args = []string{"labctl-mount", h.Name}
	cmd.Env = []string{reexec.EnvHelper + "=" + helperMount, mountEnv + "=" + string(raw)}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s (%w)", strings.TrimSpace(string(out)), err)
	}
	return nil
}

// runMount is the sandbox-mount helper, on the locked main thread.
func runMount() int {
	var p mountParams
	if err := json.Unmarshal([]byte(os.Getenv(mountEnv)), &p); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", p.InitPID), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "open the host's mount namespace: %v\n", err)
		return 1
	}
	if st, err := processStartTime(p.InitPID); err != nil || st != p.InitStartTime {
		fmt.Fprintf(os.Stderr, "the host's init (pid %d) is gone\n", p.InitPID)
		return 1
	}
	// setns into a mount namespace needs a private fs_struct.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		fmt.Fprintf(os.Stderr, "unshare fs: %v\n", err)
		return 1
	}
	if err := unix.Setns(ns, unix.CLONE_NEWNS); err != nil {
		fmt.Fprintf(os.Stderr, "enter the host's mount namespace: %v\n", err)
		return 1
	}
	if err := mkdirPrivate(p.Target); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := unix.Mount(p.Source, p.Target, p.FSType, p.Flags, p.Data); err != nil {
		fmt.Fprintf(os.Stderr, "mount %s on %s (-o %s): %v\n", p.FSType, p.Target, p.Data, err)
		return 1
	}
	return 0
}

// attachImage creates a sparse ext4 image in stateDir and attaches it to a
// free loop device with autoclear, both recorded first. It returns the
// open device.
func attachImage(ctx context.Context, h *Host, stateDir string, m Mount, rec Recorder) (*os.File, error) {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return nil, &SupportError{Msg: "mkfs.ext4 is not installed (lab disks are ext4 images)", Hint: "apt-get install e2fsprogs"}
	}
	if rec == nil {
		rec = func(string, string, any) error { return nil }
	}
	var img string
	var f *os.File
	for n := 0; ; n++ {
		img = filepath.Join(stateDir, fmt.Sprintf("disk-%d.img", n))
		if _, err := os.Lstat(img); err == nil {
			continue
		}
		if err := rec(KindImage, img, imageRecord{Path: img}); err != nil {
			return nil, err
		}
		if f, err = os.OpenFile(img, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return nil, fmt.Errorf("create image: %w", err)
		}
		break
	}
	err = f.Truncate(m.Size) // sparse: costs only what the filesystem writes
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("size image: %w", err)
	}
	args := []string{"-q", "-F", "-E", "nodiscard"}
	if m.Inodes > 0 {
		args = append(args, "-N", strconv.FormatInt(m.Inodes, 10))
	}
	if out, err := exec.CommandContext(ctx, mkfs, append(args, img)...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mkfs.ext4 %s: %w: %s", img, err, strings.TrimSpace(string(out)))
	}
	name := fmt.Sprintf("labctl-%s-%s-%s", hostInstance(h), h.Name, strings.TrimSuffix(strings.TrimPrefix(filepath.Base(img), "disk-"), ".img"))
	if err := rec(KindLoop, name, loopRecord{Image: img, Name: name}); err != nil {
		return nil, err
	}
	return attachLoop(ctx, img, name)
}

// hostInstance is the instance id of a host, from its cgroup path
// (.../labctl/<instance>/<host>).
func hostInstance(h *Host) string {
	for _, d := range h.Cgroups {
		return filepath.Base(filepath.Dir(d))
	}
	return "unknown"
}

// attachLoop binds img to a free loop device (LOOP_CONFIGURE, autoclear).
// Another process may take the free device first: then ask again.
func attachLoop(ctx context.Context, img, name string) (*os.File, error) {
	backing, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, &SupportError{Msg: "cannot open /dev/loop-control: " + err.Error(), Hint: "modprobe loop"}
	}
	defer ctl.Close()
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		dev, err := os.OpenFile(fmt.Sprintf("/dev/loop%d", n), os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("open loop device: %w", err)
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], name)
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			return dev, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("attach %s to loop%d: %w", img, n, err)
		}
	}
}

// releaseDisk releases a KindImage or KindLoop record. Idempotent.
func releaseDisk(kind, name string, data json.RawMessage) error {
	switch kind {
	case KindLoop:
		var r loopRecord
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("release loop %s: %w", name, err)
		}
		for _, dev := range loopDevicesOf(r.Image) {
			if err := detachLoop(dev); err != nil {
				return fmt.Errorf("release loop %s: %w", name, err)
			}
		}
		return nil
	case KindImage:
		var r imageRecord
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("release image %s: %w", name, err)
		}
		if !filepath.IsAbs(r.Path) || !imageName.MatchString(filepath.Base(r.Path)) {
			return fmt.Errorf("release image: %q is not a labctl disk image", r.Path)
		}
		if err := os.Remove(r.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove image %s: %w", r.Path, err)
		}
		return nil
	}
	return fmt.Errorf("release %s: not a disk kind %q", name, kind)
}

// loopDevicesOf lists the loop devices (/dev/loopN) backed by img.
func loopDevicesOf(img string) []string {
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		b := strings.TrimSuffix(strings.TrimSpace(string(data)), " (deleted)")
		if b == img {
			out = append(out, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(f))))
		}
	}
	return out
}

// detachLoop clears a loop device. A device still mounted (its host's
// mount namespace is going away) only gets autoclear, which the kernel
// honours when the last user closes it.
func detachLoop(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDONLY, 0)
	if err != nil {
		return ignoreGone(err)
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	return nil
}
