package vm

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/labctl/labctl/internal/rootfs"
)

// BoxOptions tunes BuildBox.
type BoxOptions struct {
	Dir      string    // cache directory (BoxDir)
	Force    bool      // rebuild even when a box of this recipe is cached
	Progress io.Writer // one line per step
}

// BuildBox builds the offline libvirt box from scratch and adds it to
// Vagrant as BoxName, or reuses the cached one of the same recipe. Steps:
// debootstrap from this machine's apt mirror, configure (vagrant user with
// the insecure key, DHCP, sshd), bake in the systemd hosts' root
// filesystem, mkfs.ext4 -d, qemu-img convert to qcow2, tar with
// metadata.json, vagrant box add. The kernel and initrd stay next to the
// box: it has no bootloader, the Vagrantfile boots them directly.
//
// debootstrap mounts /proc and /sys inside the tree while it runs: on a
// shared machine, hold the machine lock (flock /tmp/labctl-priv.lock).
func BuildBox(ctx context.Context, v *Vagrant, opt BoxOptions) error {
	if os.Geteuid() != 0 {
		return &Error{Env: true, Msg: "building the box needs root (debootstrap, chroot, file ownership)", Hint: "run it as root: sudo make box"}
	}
	for _, tool := range []string{"debootstrap", "mkfs.ext4", "qemu-img", "tar", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			return &Error{Env: true, Msg: "building the box needs " + tool, Hint: "install the VM tools: make deps-vm"}
		}
	}
	dir := opt.Dir
	if dir == "" {
		dir = BoxDir
	}
	progress := opt.Progress
	if progress == nil {
		progress = io.Discard
	}
	step := func(format string, args ...any) {
		fmt.Fprintf(progress, "box: "+format+"\n", args...)
	}
	boxFile := filepath.Join(dir, "labctl-debian12.box")
	stamp := filepath.Join(dir, ".complete")
	want := BoxVersion + " " + rootfs.Version + "\n"

	if !opt.Force {
		if got, err := os.ReadFile(stamp); err == nil && string(got) == want {
			if v.HasBox(ctx, BoxName) {
				step("reusing %s (%s, cached in %s)", BoxName, BoxVersion, dir)
				return nil
			}
			step("adding the cached %s to Vagrant", boxFile)
			return v.AddBox(ctx, BoxName, boxFile)
		}
	}
	start := time.Now()
	// The systemd hosts' root filesystem is baked in: under emulation
	// debootstrap inside the VM would take many minutes, and an offline
	// VM has no mirror to build it from.
	hostRootfs, err := rootfs.Ensure(ctx, progress)
	if err != nil {
		return err
	}
	_, mirror, err := rootfs.AptSource()
	if err != nil {
		return err
	}
	key, err := InsecureKey()
	if err != nil {
		return err
	}
	if err := os.RemoveAll(stamp); err != nil {
		return err
	}
	work := filepath.Join(dir, "build")
	if err := os.RemoveAll(work); err != nil {
		return fmt.Errorf("remove an unfinished build: %w", err)
	}
	root := filepath.Join(work, "root")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(dir, "build.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	run := func(name string, args ...string) error {
		fmt.Fprintf(logFile, "+ %s %s\n", name, Join(args))
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		// A chroot's tools must not see the host's locale or PATH quirks.
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive"}
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s failed (see %s): %w", name, logPath, err)
		}
		return nil
	}

	step("debootstrap %s from %s (about 2 minutes)", BoxSuite, mirror)
	if err := run("debootstrap", "--variant=minbase", "--include="+strings.Join(BoxPackages, ","),
		BoxSuite, root, mirror); err != nil {
		return err
	}
	step("configure: vagrant user, DHCP, sshd, baked %s", hostRootfs)
	if err := configureBox(root, key, run); err != nil {
		return err
	}
	baked := filepath.Join(root, strings.TrimPrefix(hostRootfs, "/"))
	if err := os.MkdirAll(filepath.Dir(baked), 0o755); err != nil {
		return err
	}
	if err := run("cp", "-a", hostRootfs, baked); err != nil {
		return err
	}
	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	initrds, _ := filepath.Glob(filepath.Join(root, "boot", "initrd.img-*"))
	if len(kernels) != 1 || len(initrds) != 1 {
		return fmt.Errorf("want one kernel and one initrd in %s/boot, found %d and %d (see %s)", root, len(kernels), len(initrds), logPath)
	}
	for src, dst := range map[string]string{kernels[0]: "vmlinuz", initrds[0]: "initrd.img"} {
		if err := copyFile(src, filepath.Join(work, dst), 0o644); err != nil {
			return err
		}
	}

	step("mkfs.ext4 -d (%d GiB sparse) and qemu-img convert to qcow2", boxDiskGiB)
	raw := filepath.Join(work, "root.raw")
	if err := run("mkfs.ext4", "-q", "-F", "-L", "labctl-root", "-d", root, raw, strconv.Itoa(boxDiskGiB)+"G"); err != nil {
		return err
	}
	if err := os.RemoveAll(root); err != nil {
		return err
	}
	if err := run("qemu-img", "convert", "-c", "-O", "qcow2", raw, filepath.Join(work, "box.img")); err != nil {
		return err
	}
	if err := os.Remove(raw); err != nil {
		return err
	}
	meta, err := boxMetadata()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(work, "metadata.json"), meta, 0o644); err != nil {
		return err
	}
	if err := run("tar", "-C", work, "-cf", boxFile+".tmp", "metadata.json", "box.img"); err != nil {
		return err
	}
	for _, f := range []string{"vmlinuz", "initrd.img"} {
		if err := os.Rename(filepath.Join(work, f), filepath.Join(dir, f)); err != nil {
			return err
		}
	}
	if err := os.Rename(boxFile+".tmp", boxFile); err != nil {
		return err
	}
	if err := os.RemoveAll(work); err != nil {
		return err
	}
	step("vagrant box add %s", BoxName)
	if err := v.AddBox(ctx, BoxName, boxFile); err != nil {
		return err
	}
	if err := os.WriteFile(stamp, []byte(want), 0o644); err != nil {
		return err
	}
	step("built in %s: %s, kernel and initrd in %s", time.Since(start).Round(time.Second), BoxName, dir)
	return nil
}

// configureBox makes the debootstrapped tree a Vagrant box.
func configureBox(root, key string, run func(string, ...string) error) error {
	for rel, f := range boxFiles("labctl") {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(f.content), f.mode); err != nil {
			return err
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return err
		}
	}
	for _, unit := range boxUnitsMasked {
		link := filepath.Join(root, "etc/systemd/system", unit)
		_ = os.Remove(link)
		if err := os.Symlink("/dev/null", link); err != nil {
			return err
		}
	}
	if err := run("chroot", root, "useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", "vagrant"); err != nil {
		return err
	}
	// sshd ignores authorized_keys that others can write: 0700 and 0600,
	// owned by vagrant.
	ssh := filepath.Join(root, "home/vagrant/.ssh")
	if err := os.MkdirAll(ssh, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(ssh, "authorized_keys"), []byte(key), 0o600); err != nil {
		return err
	}
	if err := run("chroot", root, "chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh"); err != nil {
		return err
	}
	// The downloaded .debs are not needed in the image.
	debs, _ := filepath.Glob(filepath.Join(root, "var/cache/apt/archives/*.deb"))
	for _, d := range debs {
		if err := os.Remove(d); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, mode)
}
