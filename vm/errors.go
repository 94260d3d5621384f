package vm

import (
	"strings"
)

// Error is a failure of VM mode with what to do about it. Env marks a
// machine that cannot run the VM as it is (labctl exits 3), not a failed
// operation.
type Error struct {
	Msg  string
	Hint string
	Env  bool
}

func (e *Error) Error() string { return e.Msg }

// known maps output Vagrant, vagrant-libvirt, libvirt or qemu print to the
// cause and what to do. The first match wins, so specific ones come first.
var known = []struct {
	match []string // all must occur
	err   Error
	// ssh: also a cause when `vagrant ssh` fails. The output of a remote
	// command is the learner's (a lab's curl says "Could not resolve
	// host" too), so only Vagrant's own wording counts there.
	ssh bool
}{
	{[]string{"libvirt-sock': No such file or directory"}, Error{Env: true,
		Msg:  "libvirtd is not running",
		Hint: "start it: `systemctl start libvirtd`; on a machine without systemd as PID 1 run `virtlogd -d && libvirtd -d` as root (`make deps-vm` does both)"}, true},
	{[]string{"libvirt-sock': Permission denied"}, Error{Env: true,
		Msg:  "no permission to talk to libvirtd",
		Hint: "run as root, or add yourself to the libvirt group: `adduser $USER libvirt` and log in again"}, true},
	{[]string{"The provider 'libvirt' could not be found"}, Error{Env: true,
		Msg:  "the vagrant-libvirt plugin is not installed",
		Hint: "apt-get install --no-install-recommends vagrant-libvirt (or `vagrant plugin install vagrant-libvirt`), or use VirtualBox: VAGRANT_DEFAULT_PROVIDER=virtualbox"}, false},
	{[]string{"Vagrant could not detect VirtualBox"}, Error{Env: true,
		Msg:  "VirtualBox is not installed",
		Hint: "install VirtualBox, or on Linux use libvirt: VAGRANT_DEFAULT_PROVIDER=libvirt (`make deps-vm`)"}, false},
	{[]string{"does not support virt type 'kvm'"}, Error{Env: true,
		Msg:  "this machine has no usable KVM",
		Hint: "use software emulation: LABCTL_LIBVIRT_DRIVER=qemu (slow, about 80 s to boot)"}, false},
	{[]string{"Could not access KVM kernel module"}, Error{Env: true,
		Msg:  "this machine has no usable KVM",
		Hint: "use software emulation: LABCTL_LIBVIRT_DRIVER=qemu (slow, about 80 s to boot)"}, false},
	{[]string{"Could not set up host forwarding rule"}, Error{
		Msg:  "the VM's ssh port on 127.0.0.1 is taken",
		Hint: "pick another port: LABCTL_VM_SSH_PORT=52122 labctl vm up"}, false},
	{[]string{"Box '", "could not be found"}, Error{
		Msg:  "the box is not installed and could not be downloaded",
		Hint: "offline: build the local box with `make box` (it adds labctl/debian12, which the Vagrantfile then prefers); or set LABCTL_BOX to a box you have (`vagrant box list`)"}, false},
	{[]string{"Could not resolve host"}, Error{
		Msg:  "Vagrant needs the network to download the box",
		Hint: "offline: build the local box with `make box`, which the Vagrantfile then uses"}, false},
	{[]string{"is not a Linux binary"}, Error{
		Msg:  "bin/labctl is not a Linux binary, so it cannot be installed in the VM",
		Hint: "build one: GOOS=linux GOARCH=amd64 CGO_ENABLED=0 go build -o bin/labctl ./cmd/labctl; then `labctl vm up --provision`"}, false},
	{[]string{"bin/labctl is missing"}, Error{
		Msg:  "bin/labctl is missing, so there is nothing to install in the VM",
		Hint: "build it first: make build (off Linux: GOOS=linux GOARCH=amd64 CGO_ENABLED=0 go build -o bin/labctl ./cmd/labctl)"}, false},
	{[]string{"VM must be created before running this command"}, Error{
		Msg:  "the VM does not exist",
		Hint: "create it: labctl vm up (about 80 s under software emulation)"}, true},
	{[]string{"VM must be running"}, Error{
		Msg:  "the VM is not running",
		Hint: "start it: labctl vm up"}, true},
	{[]string{"another process is already executing an action on the machine"}, Error{
		Msg:  "another vagrant command is working on the VM",
		Hint: "wait for it to finish, then try again"}, true},
	{[]string{"Timed out while waiting for the machine to boot"}, Error{
		Msg:  "the VM did not answer on ssh in time",
		Hint: "look at its console (`virsh console` or `virsh dumpxml`), then `labctl vm destroy` and `labctl vm up`; under software emulation a busy machine is slow"}, false},
}

// Classify returns the known cause of a vagrant failure from its output,
// or nil when the output matches nothing known (vagrant's own message,
// already shown, is then the best there is).
func Classify(output string) *Error { return classify(output, false) }

// ClassifySSH is Classify for `vagrant ssh`: Vagrant's own causes only.
func ClassifySSH(output string) *Error { return classify(output, true) }

func classify(output string, ssh bool) *Error {
	for _, k := range known {
		if ssh && !k.ssh {
			continue
		}
		all := true
		for _, m := range k.match {
			if !strings.Contains(output, m) {
				all = false
				break
			}
		}
		if all {
			e := k.err
			return &e
		}
	}
	return nil
}
