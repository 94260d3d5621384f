package fs

import "testing"

// TestParseProcCgroup: the memory hierarchy's path on v1 (this machine
// may have only one layout, so both are covered here), the unified one on
// v2, and nothing from a garbled file.
func TestParseProcCgroup(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"0::/system.slice/run-r1.scope\n", "/system.slice/run-r1.scope"},
		{"9:name=systemd:/\n8:pids:/a.scope\n4:memory:/a.scope\n0::/\n", "/a.scope"},
		{"5:cpu,memory:/b.scope\n0::/\n", "/b.scope"},
		{"3:cpuset:/\n0::/c.scope\n", "/c.scope"},
		{"garbage\n", ""},
	} {
		if got := parseProcCgroup(c.in); got != c.want {
			t.Errorf("parseProcCgroup(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
