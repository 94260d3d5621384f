package sandbox

// InitSystemd is Spec.Init for a host whose PID 1 is a real systemd, booted
// by systemd-nspawn over the cached root filesystem (internal/rootfs).
const InitSystemd = "systemd"

// KindSystemd is the ledger kind of a systemd host: one record holds
// everything Release needs (its cgroup trees, the nspawn process and the
// container they hold, its named netns, nspawn's /run leftovers).
const KindSystemd = "systemd-host"

// LabctlInHost is where the labctl binary is bind-mounted (read-only) in a
// systemd host, so lab units can run labctl helpers.
const LabctlInHost = "/usr/local/libexec/labctl/labctl"
