//go:build !linux

package hostsnap

// familyAll: netlink is Linux-only; off Linux the snapshot's network part
// fails at run time, and the CLI still builds.
const familyAll = 0
