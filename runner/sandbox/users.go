package sandbox

// User is a lab-local account: it exists only in the host's view, in its
// private copies of /etc/passwd and /etc/shadow.
type User struct {
	Name   string
	UID    int
	Group  string   // primary group, a Group of the spec; "" = a group of the user's name with GID = UID
	Groups []string // supplementary groups, Groups of the spec
	Home   string   // default /home/<name>
	Shell  string   // default /bin/bash
}

// Group is a lab-local group, in the host's private /etc/group.
type Group struct {
	Name string
	GID  int
}
