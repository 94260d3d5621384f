package labtest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Condition answers the conditions lab scripts use:
//
//	[root]     running as root
//	[cgroup1]  the memory controller is on cgroup v1 (legacy or hybrid layout)
//	[cgroup2]  the memory controller is on the unified cgroup v2 hierarchy
//	[netns]    network namespaces can be created (root and /proc/self/ns/net)
//	[systemd]  systemd-nspawn is installed (systemd lab hosts)
//	[vm]       vagrant is installed (VM mode)
func Condition(cond string) (bool, error) {
	switch cond {
	case "root":
		return os.Geteuid() == 0, nil
	case "cgroup1":
		return memoryOnV1(), nil
	case "cgroup2":
		return memoryOnV2(), nil
	case "netns":
		_, err := os.Stat("/proc/self/ns/net")
		return os.Geteuid() == 0 && err == nil, nil
	case "systemd":
		_, err := exec.LookPath("systemd-nspawn")
		return err == nil, nil
	case "vm":
		_, err := exec.LookPath("vagrant")
		return err == nil, nil
	}
	return false, fmt.Errorf("unknown condition %q (known: root, cgroup1, cgroup2, netns, systemd, vm)", cond)
}

func memoryOnV1() bool {
	_, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes")
	return err == nil
}

func memoryOnV2() bool {
	data, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	return err == nil && strings.Contains(" "+string(data)+" ", " memory")
}
