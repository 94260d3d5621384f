package hostsnap

import (
	"fmt"
	"strings"
)

// Mentioning lists the entries of the snapshot whose names contain s (an
// instance id): what an instance left behind.
func (s *Snapshot) Mentioning(sub string) []string {
	var out []string
	add := func(kind, v string) {
		if strings.Contains(v, sub) {
			out = append(out, kind+" "+v)
		}
	}
	for _, n := range s.NetNS {
		add("netns", n)
	}
	for _, l := range s.Links {
		add("link", l.Name)
	}
	for _, m := range s.Mounts {
		add("mount", m.Point+" ("+m.FSType+" "+m.Source+")")
	}
	for _, c := range s.Cgroups {
		add("cgroup", c)
	}
	for _, p := range s.Procs {
		if strings.Contains(p.Cgroup, sub) {
			out = append(out, fmt.Sprintf("process %d (%s) in %s", p.PID, p.Comm, p.Cgroup))
		}
	}
	for _, l := range s.Loops {
		add("loop", l)
	}
	for _, n := range s.Nspawn {
		add("nspawn", n)
	}
	return out
}
