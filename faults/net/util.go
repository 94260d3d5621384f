// Package netfault is the "networking and DNS" fault family: services a
// lab places on its hosts (HTTP, TCP echo, a DNS server), and the kinds
// that break routing, links, name resolution, listeners and firewalls for
// real inside the lab's own network namespaces.
//
// Everything here acts inside a host: through netlink handles opened in
// the host's network namespace, or through commands run inside the host
// (faults.Host.Command). Nothing ever touches the machine's own network
// namespace, /etc or ruleset.
package netfault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/faults/internal/hostproc"
)

// The host helpers the fault packages share, under this package's names.
var (
	poll     = hostproc.Poll
	innerPID = hostproc.NSPID
)

// withHandle runs fn with a netlink handle bound to the host's network
// namespace, so no thread ever switches namespaces.
func withHandle(h faults.Host, fn func(*netlink.Handle) error) error {
	ns, err := netns.GetFromPath(h.NetNSPath())
	if err != nil {
		return fmt.Errorf("host %s: open network namespace: %w", h.Name(), err)
	}
	defer ns.Close()
	nh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("host %s: netlink: %w", h.Name(), err)
	}
	defer nh.Close()
	return fn(nh)
}

// hostGone reports whether an error means the host's namespace no longer
// exists, which makes a revert moot.
func hostGone(h faults.Host) bool {
	_, err := os.Stat(h.NetNSPath())
	return errors.Is(err, os.ErrNotExist)
}

// run runs argv inside the host and returns its combined output.
func run(ctx context.Context, h faults.Host, stdin []byte, argv ...string) (string, error) {
	cmd := h.Command(ctx, argv...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("host %s: %s: %w: %s", h.Name(), strings.Join(argv, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// readHostFile reads a file of the host's private view.
func readHostFile(ctx context.Context, h faults.Host, path string) ([]byte, error) {
	out, err := run(ctx, h, nil, "cat", path)
	return []byte(out), err
}

// writeHostFile replaces a file inside the host. It is written from
// inside the host's mount namespace, where /etc is the host's private
// overlay, so the machine's own file can never be reached.
func writeHostFile(ctx context.Context, h faults.Host, path string, content []byte) error {
	cmd := h.Command(ctx, "tee", path)
	cmd.Stdin = bytes.NewReader(content)
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("host %s: write %s: %w: %s", h.Name(), path, err, strings.TrimSpace(errOut.String()))
	}
	return nil
}

// pidNS returns the pid namespace identity of a machine-side PID.
func pidNS(pid int) (string, error) {
	return os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns", "pid"))
}

// hostProcs returns machine-side PIDs of the host's processes whose
// command name is comm.
func hostProcs(h faults.Host, comm string) ([]int, error) {
	want, err := pidNS(h.InitPID())
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", h.Name(), err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if hostproc.Comm(pid) != comm {
			continue
		}
		if ns, err := pidNS(pid); err == nil && ns == want && !isZombie(pid) {
			out = append(out, pid)
		}
	}
	return out, nil
}

// isZombie: a zombie (or a process already gone) is no live listener.
func isZombie(pid int) bool {
	state, err := hostproc.StatusField(pid, "State")
	return err != nil || strings.HasPrefix(state, "Z")
}
