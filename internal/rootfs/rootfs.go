// Package rootfs builds and caches the minimal Debian root filesystem that
// systemd lab hosts boot (systemd-nspawn --volatile=overlay keeps it
// pristine: every host writes to its own tmpfs overlay).
//
// It is built once with debootstrap from the apt mirror this machine is
// configured with (never a hard-coded host: the machine may be offline
// except for its mirror) and kept under /var/cache/labctl. Parallel
// `labctl up`s build it once: the build holds a flock.
package rootfs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// CacheDir holds the root filesystems and the build lock.
const CacheDir = "/var/cache/labctl"

// Version names the current recipe; changing Packages or the setup below
// bumps it, so an old cache is not used for a new recipe.
const Version = "debian-v1"

// Packages are installed on top of debootstrap's minbase: systemd as PID 1,
// dbus for systemctl, and the tools a learner diagnoses with.
var Packages = []string{
	"systemd", "systemd-sysv", "dbus", "procps", "iproute2", "psmisc",
	"lsof", "strace", "less", "util-linux",
}

// completeMarker exists in a finished root filesystem only.
const completeMarker = ".labctl-rootfs-complete"

// Dir is where the current root filesystem lives once built.
func Dir() string { return filepath.Join(CacheDir, "rootfs", Version) }

// Ready reports whether the root filesystem has been built.
func Ready() bool {
	_, err := os.Stat(filepath.Join(Dir(), completeMarker))
	return err == nil
}

// Ensure returns the root filesystem's directory, building it first when it
// is missing. progress gets one line when a build starts (it takes 1 to 2½
// minutes, depending on the mirror) and one when it ends.
func Ensure(ctx context.Context, progress io.Writer) (string, error) {
	dir := Dir()
	if Ready() {
		return dir, nil
	}
	if err := os.MkdirAll(filepath.Join(CacheDir, "rootfs"), 0o755); err != nil {
		return "", fmt.Errorf("rootfs cache: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(CacheDir, "rootfs.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", fmt.Errorf("rootfs lock: %w", err)
	}
	defer lock.Close()
	if err := lockExclusive(lock); err != nil {
		return "", fmt.Errorf("rootfs lock: %w", err)
	}
	// Someone else may have built it while we waited for the lock.
	if Ready() {
		return dir, nil
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", fmt.Errorf("building the systemd hosts' root filesystem needs debootstrap: apt-get install debootstrap systemd-container (or run make deps): %w", err)
	}
	suite, mirror, err := AptSource()
	if err != nil {
		return "", err
	}
	start := time.Now()
	fmt.Fprintf(progress, "building the root filesystem of systemd hosts in %s (debootstrap %s from %s; 1 to 2½ minutes, once)\n", dir, suite, mirror)
	tmp := dir + ".build"
	if err := os.RemoveAll(tmp); err != nil {
		return "", fmt.Errorf("remove an unfinished build: %w", err)
	}
	logPath := filepath.Join(CacheDir, "rootfs-build.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase",
		"--include="+strings.Join(Packages, ","), suite, tmp, mirror)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("debootstrap %s %s failed (see %s): %w", suite, mirror, logPath, err)
	}
	if err := configure(tmp); err != nil {
		return "", fmt.Errorf("configure the root filesystem: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, completeMarker), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("install the root filesystem: %w", err)
	}
	fmt.Fprintf(progress, "root filesystem built in %s\n", time.Since(start).Round(time.Second))
	return dir, nil
}

// configure makes the image boot quickly and quietly as a lab host.
func configure(root string) error {
	// Empty machine-id: systemd generates a fresh one per boot (in the
	// volatile overlay), so two hosts never share one.
	if err := os.WriteFile(filepath.Join(root, "etc/machine-id"), nil, 0o444); err != nil {
		return err
	}
	// Units that wait for things a lab host never has.
	for _, unit := range []string{
		"systemd-networkd-wait-online.service", "apt-daily.timer", "apt-daily-upgrade.timer",
		"e2scrub_all.timer", "fstrim.timer", "getty@tty1.service", "console-getty.service",
	} {
		link := filepath.Join(root, "etc/systemd/system", unit)
		_ = os.Remove(link)
		if err := os.Symlink("/dev/null", link); err != nil {
			return err
		}
	}
	// The labctl binary is bind-mounted here when a host starts.
	return os.MkdirAll(filepath.Join(root, "usr/local/libexec/labctl"), 0o755)
}

// AptSource reads the Debian suite and mirror this machine's apt uses:
// the first deb source of the release's codename (not -security/-updates).
func AptSource() (suite, mirror string, err error) {
	suite, err = codename()
	if err != nil {
		return "", "", err
	}
	var files []string
	files = append(files, "/etc/apt/sources.list")
	more, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append(files, more...)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var m string
		if strings.HasSuffix(f, ".sources") {
			m = fromDeb822(string(data), suite)
		} else {
			m = fromOneLine(string(data), suite)
		}
		if m != "" {
			return suite, m, nil
		}
	}
	return "", "", fmt.Errorf("no apt source for %s found in /etc/apt/sources.list{,.d}: configure a Debian mirror for apt", suite)
}

func codename() (string, error) {
	f, err := os.Open("/etc/os-release")
	if err != nil {
		return "", fmt.Errorf("read /etc/os-release: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VERSION_CODENAME="); ok && v != "" {
			return strings.Trim(v, `"`), nil
		}
	}
	return "", errors.New("/etc/os-release has no VERSION_CODENAME: systemd hosts need a Debian machine")
}

// fromOneLine finds "deb [opts] URI SUITE components" for suite.
func fromOneLine(text, suite string) string {
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) > 0 {
				f = f[1:]
			}
		}
		if len(f) >= 2 && f[1] == suite {
			return f[0]
		}
	}
	return ""
}

// fromDeb822 finds a "Types: deb" stanza whose Suites include suite.
func fromDeb822(text, suite string) string {
	for _, stanza := range strings.Split(text, "\n\n") {
		fields := map[string]string{}
		for _, line := range strings.Split(stanza, "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
				fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
		if !contains(strings.Fields(fields["types"]), "deb") || !contains(strings.Fields(fields["suites"]), suite) {
			continue
		}
		if uris := strings.Fields(fields["uris"]); len(uris) > 0 {
			return uris[0]
		}
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
