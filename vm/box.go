package vm

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// BoxName is the local box as `vagrant box list` shows it; the Vagrantfile
// prefers it when it is installed.
const BoxName = "labctl/debian12"

// BoxVersion names the box recipe; changing the packages or the setup
// below bumps it, so `make box` rebuilds instead of reusing an old box.
const BoxVersion = "labctl-box-v1"

// BoxDir is where the box, its kernel and initrd are cached (the
// Vagrantfile's LABCTL_BOX_DIR default).
const BoxDir = "/var/cache/labctl/box"

// BoxSuite is the Debian release of the box: Debian 12.
const BoxSuite = "bookworm"

// BoxPackages are installed on top of debootstrap's minbase: a kernel
// booted directly (no bootloader), systemd as PID 1, sshd and sudo for
// Vagrant, DHCP with ifupdown, and every tool labs and learners use (the
// Makefile's APT_PACKAGES), so provisioning needs no network.
var BoxPackages = []string{
	"linux-image-amd64", "systemd", "systemd-sysv", "dbus", "udev", "kmod",
	"openssh-server", "openssh-client", "sudo", "ifupdown", "isc-dhcp-client",
	"procps", "psmisc", "iproute2", "util-linux", "strace", "lsof", "e2fsprogs", "curl",
	"iputils-ping", "bind9-dnsutils", "bash", "tcpdump", "nftables",
	"systemd-container", "debootstrap", "less",
}

// boxDiskGiB is the virtual size of the root disk; the qcow2 holds only
// what is used (about 1 GiB), the rest is room for labs' files.
const boxDiskGiB = 8

// boxMetadata is the metadata.json of a vagrant-libvirt box.
func boxMetadata() ([]byte, error) {
	return json.Marshal(map[string]any{"provider": "libvirt", "format": "qcow2", "virtual_size": boxDiskGiB})
}

// boxUnitsMasked wait for things the VM never has or cost minutes of
// emulated CPU for nothing.
var boxUnitsMasked = []string{
	"apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer",
	"man-db.timer", "e2scrub_reap.service", "systemd-networkd-wait-online.service",
}

// boxFiles are written into the box's root filesystem: mode and content.
func boxFiles(hostname string) map[string]struct {
	mode    os.FileMode
	content string
} {
	type f = struct {
		mode    os.FileMode
		content string
	}
	return map[string]f{
		"etc/fstab":                          {0o644, "/dev/vda / ext4 rw,errors=remount-ro 0 1\n"},
		"etc/hostname":                       {0o644, hostname + "\n"},
		"etc/hosts":                          {0o644, "127.0.0.1 localhost\n127.0.1.1 " + hostname + "\n::1 localhost ip6-localhost ip6-loopback\n"},
		"etc/network/interfaces":             {0o644, "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n"},
		"etc/sudoers.d/vagrant":              {0o440, "vagrant ALL=(ALL) NOPASSWD:ALL\nDefaults:vagrant !requiretty\n"},
		"etc/ssh/sshd_config.d/vagrant.conf": {0o644, "UseDNS no\n"},
		// Empty: systemd makes a machine id on the first boot of each VM.
		"etc/machine-id": {0o444, ""},
	}
}

// InsecureKey finds Vagrant's standard insecure public key, which the box's
// vagrant user accepts until `vagrant up` replaces it with a fresh key.
func InsecureKey() (string, error) {
	for _, pattern := range []string{
		"/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub",
		"/opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub",
		"/opt/vagrant/embedded/gems/*/gems/vagrant-*/keys/vagrant.pub",
	} {
		m, _ := filepath.Glob(pattern)
		if len(m) > 0 {
			data, err := os.ReadFile(m[len(m)-1])
			if err != nil {
				return "", err
			}
			if !strings.HasPrefix(string(data), "ssh-") {
				return "", fmt.Errorf("%s is not an ssh public key", m[len(m)-1])
			}
			return string(data), nil
		}
	}
	return "", &Error{Env: true, Msg: "Vagrant's insecure public key (keys/vagrant.pub) was not found",
		Hint: "install Vagrant: make deps-vm"}
}
