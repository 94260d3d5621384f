package vm_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/labctl/labctl/internal/hostsnap"
)

// TestVMEndToEnd is `make test-vm`: the VM boots (software emulation on
// this kind of machine), labctl proves labs inside it on systemd PID 1 and
// cgroup v2, a lab is driven from here with --vm, and afterwards the
// machine is as it was: no domain, volume, pool, network, link, firewall
// rule or daemon that the test made. It takes minutes, so it runs only
// with LABCTL_TEST_VM=1 (the box must exist: make box).
func TestVMEndToEnd(t *testing.T) {
	if os.Getenv("LABCTL_TEST_VM") != "1" {
		t.Skip("slow VM test: run make test-vm (LABCTL_TEST_VM=1)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("make test-vm needs root (libvirt's system daemon, the host snapshots)")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	labctl := filepath.Join(repo, "bin", "labctl")
	labs := strings.Fields(os.Getenv("LABCTL_TEST_VM_LABS"))
	if len(labs) == 0 {
		labs = []string{"oom-killed-worker", "no-default-route", "exec-not-found"}
	}

	before := snapshot(t)
	daemons := startLibvirt(t)
	lv := libvirtState(t)
	t.Cleanup(func() {
		// Runs last: after the VM is destroyed and libvirt cleaned.
		daemons.stop(t)
		after := snapshot(t)
		if d := hostsnap.Diff(before.host, after.host); d != "" {
			t.Errorf("the machine changed (-before +after):\n%s", d)
		}
		if before.iptables != after.iptables {
			t.Errorf("iptables rules changed:\nbefore:\n%s\nafter:\n%s", before.iptables, after.iptables)
		}
		if !slices.Equal(before.daemons, after.daemons) {
			t.Errorf("VM processes changed: before %q, after %q", before.daemons, after.daemons)
		}
		t.Logf("no residue: host snapshot, iptables-save and VM processes equal before and after")
	})
	t.Cleanup(func() { lv.restore(t) })
	t.Cleanup(func() {
		start := time.Now()
		run(t, repo, 10*time.Minute, labctl, "vm", "destroy")
		t.Logf("timing: vagrant destroy %s", time.Since(start).Round(time.Second))
	})

	start := time.Now()
	if out, err := run(t, repo, 20*time.Minute, labctl, "vm", "up"); err != nil {
		t.Fatalf("labctl vm up: %v\n%s", err, tail(out))
	}
	t.Logf("timing: labctl vm up (vagrant up, provision) %s", time.Since(start).Round(time.Second))

	// The VM is what VM mode promises: systemd PID 1 on a unified cgroup v2
	// hierarchy with the memory and cpu controllers.
	out, err := run(t, repo, 5*time.Minute, labctl, "vm", "ssh", "--",
		"sh", "-c", "cat /proc/1/comm; stat -fc %T /sys/fs/cgroup; cat /sys/fs/cgroup/cgroup.controllers; uname -r; nproc")
	if err != nil {
		t.Fatalf("vm ssh: %v\n%s", err, out)
	}
	for _, want := range []string{"systemd", "cgroup2fs", "memory", "cpu", "pids"} {
		if !strings.Contains(out, want) {
			t.Fatalf("the VM should run systemd as PID 1 on cgroup v2 with %s; got:\n%s", want, out)
		}
	}
	t.Logf("VM: %s", strings.Join(strings.Fields(out), " "))

	// labctl test inside the VM, one lab at a time so each has its timing.
	for _, lab := range labs {
		start := time.Now()
		out, err := run(t, repo, 15*time.Minute, labctl, "test", "--vm", lab)
		t.Logf("timing: labctl test --vm %s: %s (%v)\n%s", lab, time.Since(start).Round(time.Second), errOrPass(err), tail(out))
		if err != nil {
			t.Errorf("labctl test %s in the VM failed: %v", lab, err)
		}
	}

	// A lab driven from here with --vm: up, a command in its host, check, down.
	start = time.Now()
	steps := [][]string{
		{"up", "--vm", "--name", "vmcheck", "first-look"},
		{"status", "--vm"},
		{"shell", "--vm", "vmcheck", "--", "cat", "/proc/self/cgroup"},
		{"check", "--vm", "vmcheck"}, // unanswered: exit 1 is the expected grade
		{"down", "--vm", "vmcheck"},
	}
	for _, s := range steps {
		out, err := run(t, repo, 5*time.Minute, append([]string{labctl}, s...)...)
		if err != nil && s[0] != "check" {
			t.Errorf("labctl %s: %v\n%s", strings.Join(s, " "), err, tail(out))
		}
		if s[0] == "check" && exitCode(err) != 1 {
			t.Errorf("labctl check --vm of an unanswered lab: exit %d, want 1\n%s", exitCode(err), tail(out))
		}
	}
	t.Logf("timing: up/status/shell/check/down --vm of first-look %s", time.Since(start).Round(time.Second))
}

func errOrPass(err error) string {
	if err == nil {
		return "pass"
	}
	return err.Error()
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// run runs argv in dir with a timeout, logging and returning its output.
func run(t *testing.T, dir string, timeout time.Duration, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdin = nil
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	// The whole output goes to bin/test-vm.log; failures show its tail.
	if f, ferr := os.OpenFile(filepath.Join(dir, "bin", "test-vm.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); ferr == nil {
		fmt.Fprintf(f, "\n$ %s  (%v)\n%s", strings.Join(argv, " "), errOrPass(err), progressRE.ReplaceAllString(out.String(), ""))
		f.Close()
	}
	return out.String(), err
}

var progressRE = regexp.MustCompile(`(\x1b\[K)?Progress: [0-9]+%(\x1b\[K)?`)

func tail(s string) string {
	// Vagrant's upload progress is one long line of "\x1b[KProgress: N%".
	s = progressRE.ReplaceAllString(s, "")
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

type machineSnap struct {
	host     *hostsnap.Snapshot
	iptables string   // iptables-save of the legacy and nft backends' view
	daemons  []string // libvirtd, virtlogd, qemu, dnsmasq processes
}

func snapshot(t *testing.T) machineSnap {
	t.Helper()
	h, err := hostsnap.Take()
	if err != nil {
		t.Fatal(err)
	}
	var ipt string
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		if path, err := exec.LookPath(tool); err == nil {
			out, err := exec.Command(path).Output()
			if err != nil {
				t.Fatalf("%s: %v", tool, err)
			}
			ipt += dropComments(string(out))
		}
	}
	return machineSnap{host: h, iptables: ipt, daemons: vmProcs()}
}

// dropComments removes iptables-save's "# Generated ... on <date>" lines.
func dropComments(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, "#") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

var vmDaemonNames = []string{"libvirtd", "virtlogd", "virtlockd", "dnsmasq", "qemu-system-x86", "qemu-system-x86_64"}

func vmProcs() []string {
	var out []string
	dirs, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		comm := strings.TrimSpace(string(b))
		if slices.Contains(vmDaemonNames, comm) {
			out = append(out, comm+" "+filepath.Base(filepath.Dir(f)))
		}
	}
	slices.Sort(out)
	return out
}

// daemons are the libvirt daemons this test started (none when they ran).
type daemons struct{ pids map[string]int }

// startLibvirt starts virtlogd and libvirtd unless libvirtd answers
// already; there is no systemd as PID 1 to start them.
func startLibvirt(t *testing.T) *daemons {
	t.Helper()
	d := &daemons{pids: map[string]int{}}
	if virshAnswers() {
		return d
	}
	t.Cleanup(func() { d.stop(t) }) // also on a failed start
	for _, name := range []string{"virtlogd", "libvirtd"} {
		if pid := pidOf(name); pid != 0 {
			continue
		}
		if out, err := exec.Command(name, "-d").CombinedOutput(); err != nil {
			t.Fatalf("%s -d: %v\n%s", name, err, out)
		}
		pid, err := readPidfile("/run/" + name + ".pid")
		if err != nil {
			t.Fatalf("%s started but: %v", name, err)
		}
		d.pids[name] = pid
	}
	deadline := time.Now().Add(60 * time.Second)
	for !virshAnswers() {
		if time.Now().After(deadline) {
			t.Fatal("libvirtd started but does not answer `virsh -c qemu:///system version` after 60 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return d
}

func (d *daemons) stop(t *testing.T) {
	for _, name := range []string{"libvirtd", "virtlogd"} {
		pid, ok := d.pids[name]
		if !ok {
			continue
		}
		delete(d.pids, name)
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			continue
		}
		deadline := time.Now().Add(30 * time.Second)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("%s (pid %d) did not stop on SIGTERM", name, pid)
		}
	}
}

func virshAnswers() bool {
	return exec.Command("virsh", "-c", "qemu:///system", "version").Run() == nil
}

func pidOf(comm string) int {
	files, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.TrimSpace(string(b)) == comm {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
			return pid
		}
	}
	return 0
}

func readPidfile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// libvirt records what libvirt had before the test, so that what
// vagrant-libvirt adds and keeps (the box's base volume, the "default"
// storage pool it defines) is removed again.
type libvirt struct {
	pools   []string
	vols    map[string][]string
	domains []string
	nets    []string
}

func virsh(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("virsh", append([]string{"-c", "qemu:///system", "-q"}, args...)...).Output()
	if err != nil {
		t.Fatalf("virsh %s: %v", strings.Join(args, " "), err)
	}
	var list []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			list = append(list, l)
		}
	}
	slices.Sort(list)
	return list
}

func libvirtState(t *testing.T) *libvirt {
	lv := &libvirt{
		pools:   virsh(t, "pool-list", "--all", "--name"),
		vols:    map[string][]string{},
		domains: virsh(t, "list", "--all", "--name"),
		nets:    virsh(t, "net-list", "--all", "--name"),
	}
	for _, p := range lv.pools {
		lv.vols[p] = volNames(t, p)
	}
	return lv
}

func volNames(t *testing.T, pool string) []string {
	var names []string
	for _, l := range virsh(t, "vol-list", "--pool", pool) {
		names = append(names, strings.Fields(l)[0])
	}
	return names
}

func (lv *libvirt) restore(t *testing.T) {
	if !virshAnswers() {
		t.Error("libvirtd stopped answering before its state was restored")
		return
	}
	for _, p := range virsh(t, "pool-list", "--all", "--name") {
		for _, v := range volNames(t, p) {
			if !slices.Contains(lv.vols[p], v) {
				t.Logf("removing volume %s/%s", p, v)
				virsh(t, "vol-delete", "--pool", p, v)
			}
		}
		if !slices.Contains(lv.pools, p) {
			t.Logf("removing storage pool %s", p)
			virsh(t, "pool-destroy", p)
			virsh(t, "pool-undefine", p)
		}
	}
	for what, pair := range map[string][2][]string{
		"domains":  {lv.domains, virsh(t, "list", "--all", "--name")},
		"networks": {lv.nets, virsh(t, "net-list", "--all", "--name")},
		"pools":    {lv.pools, virsh(t, "pool-list", "--all", "--name")},
	} {
		if !slices.Equal(pair[0], pair[1]) {
			t.Errorf("libvirt %s changed: before %q, after %q", what, pair[0], pair[1])
		}
	}
	fmt.Fprintln(os.Stderr, "libvirt: domains, networks, pools and volumes as before")
}
