// Package labs defines the lab file format (v1), loads and validates lab
// files strictly, and holds the catalog embedded in the binary.
//
// The Go types in this file are the format: the strict decoder, the
// validator and the JSON Schema (labctl schema) are all derived from them,
// so the documentation in docs/lab-format.md, the schema and the loader
// cannot drift apart.
package labs

// APIVersion is the only lab format version this build understands.
const APIVersion = "labctl/v1"

// Lab is one scenario file.
type Lab struct {
	// APIVersion must be "labctl/v1".
	APIVersion string `yaml:"apiVersion" json:"apiVersion" doc:"format version; must be labctl/v1" required:"true"`
	// Name is the lab's identifier: lowercase letters, digits and dashes.
	Name       string     `yaml:"name" json:"name" doc:"identifier: lowercase letters, digits, dashes" required:"true"`
	Title      string     `yaml:"title" json:"title" doc:"one-line title" required:"true"`
	Summary    string     `yaml:"summary" json:"summary" doc:"one or two sentences for the catalog" required:"true"`
	Difficulty Difficulty `yaml:"difficulty" json:"difficulty" doc:"beginner, intermediate or advanced" required:"true"`
	Duration   Duration   `yaml:"duration" json:"duration" doc:"expected time to solve, e.g. 15m" required:"true"`
	Topics     []string   `yaml:"topics" json:"topics" doc:"curriculum topics, e.g. memory, cgroups" required:"true"`
	// Seed fixes the randomness of the lab's parameters; without it every
	// instance draws a seed (recorded in the instance, so a run can be replayed).
	Seed *int64 `yaml:"seed,omitempty" json:"seed,omitempty" doc:"fixed seed for randomised parameters (default: drawn per instance and recorded)"`
	// Briefing is Markdown shown by `labctl up` and `labctl describe`; may use facts.
	Briefing string `yaml:"briefing" json:"briefing" doc:"Markdown briefing; may reference facts" required:"true" template:"true"`

	Hosts      Hosts      `yaml:"hosts" json:"hosts" doc:"the lab's throwaway machines, by name" required:"true"`
	Links      []Link     `yaml:"links,omitempty" json:"links,omitempty" doc:"veth links joining two hosts"`
	Faults     []Fault    `yaml:"faults,omitempty" json:"faults,omitempty" doc:"what the lab breaks, in order"`
	Checks     []Check    `yaml:"checks" json:"checks" doc:"questions and state probes that grade diagnosis and fix" required:"true"`
	Hints      []Hint     `yaml:"hints,omitempty" json:"hints,omitempty" doc:"ordered hints, optionally gated"`
	Solution   *Solution  `yaml:"solution,omitempty" json:"solution,omitempty" doc:"the reference fix, used by labctl solve and labctl test"`
	WrongFixes []WrongFix `yaml:"wrong_fixes,omitempty" json:"wrong_fixes,omitempty" doc:"plausible fixes that must leave at least one check failing"`

	// File is where the lab was loaded from (not part of the format).
	File string `yaml:"-" json:"-"`
	// Source is the raw file content as loaded (not part of the format).
	Source []byte `yaml:"-" json:"-"`
}

// Difficulty is beginner, intermediate or advanced.
type Difficulty string

const (
	Beginner     Difficulty = "beginner"
	Intermediate Difficulty = "intermediate"
	Advanced     Difficulty = "advanced"
)

// Hosts is the lab's hosts in file order. In YAML it is a mapping from
// host name to Host.
type Hosts []*Host

// Host is one throwaway machine: its own namespaces, cgroup and PID 1.
type Host struct {
	// Name is the mapping key in the file.
	Name string `yaml:"-" json:"-"`
	// Hostname defaults to Name.
	Hostname string `yaml:"hostname,omitempty" json:"hostname,omitempty" doc:"UTS hostname (default: the host's name)"`
	// Init is "mini" (labctl's reaping init, the default) or "systemd".
	Init   InitKind `yaml:"init,omitempty" json:"init,omitempty" doc:"PID 1: mini (labctl's reaping init, default) or systemd"`
	Memory *Size    `yaml:"memory,omitempty" json:"memory,omitempty" doc:"memory limit of the host's cgroup, e.g. 64Mi (default 256Mi)"`
	Pids   *int     `yaml:"pids,omitempty" json:"pids,omitempty" doc:"pids limit of the host's cgroup (default 512)"`
	// CPU is a quota in cores, e.g. 0.2.
	CPU   *float64   `yaml:"cpu,omitempty" json:"cpu,omitempty" doc:"CPU quota in cores, e.g. 0.2 (default: unlimited)"`
	Files []File     `yaml:"files,omitempty" json:"files,omitempty" doc:"files placed in the host's private view"`
	DNS   *DNSConfig `yaml:"dns,omitempty" json:"dns,omitempty" doc:"the host's /etc/resolv.conf and /etc/hosts"`
	// Routes are added after links are up, e.g. {to: default, via: router}.
	Routes []Route `yaml:"routes,omitempty" json:"routes,omitempty" doc:"routes added after the links are up"`
	// Forward enables IPv4 forwarding in the host's netns (a router).
	Forward bool `yaml:"forward,omitempty" json:"forward,omitempty" doc:"enable IPv4 forwarding (a router)"`
	// Users and Groups exist only in the host's view: they are appended to
	// the host's private copies of /etc/passwd, /etc/group and /etc/shadow.
	Users  []User  `yaml:"users,omitempty" json:"users,omitempty" doc:"lab-local users, added to the host's own /etc/passwd and /etc/shadow"`
	Groups []Group `yaml:"groups,omitempty" json:"groups,omitempty" doc:"lab-local groups, added to the host's own /etc/group"`
	// Mounts are lab-local filesystems, mounted in the host's view only
	// and destroyed with it.
	Mounts []MountSpec `yaml:"mounts,omitempty" json:"mounts,omitempty" doc:"lab-local filesystems (sized tmpfs or ext4 image) mounted inside the host only"`
}

// User is a lab-local account of one host.
type User struct {
	Name string `yaml:"name" json:"name" doc:"login name: lowercase letters, digits, '_' and '-', starting with a letter or '_'" required:"true"`
	UID  int    `yaml:"uid" json:"uid" doc:"numeric user id, 1000-59999, unique in the host" required:"true"`
	// Group is the primary group: a group of this host or of the machine.
	// Without it the user gets a group of its own name and GID = UID.
	Group  string   `yaml:"group,omitempty" json:"group,omitempty" doc:"primary group (default: a group named after the user, gid = uid)"`
	Groups []string `yaml:"groups,omitempty" json:"groups,omitempty" doc:"supplementary groups"`
	Home   string   `yaml:"home,omitempty" json:"home,omitempty" doc:"home directory (default /home/<name>; not created)"`
	Shell  string   `yaml:"shell,omitempty" json:"shell,omitempty" doc:"login shell (default /bin/bash)"`
}

// Group is a lab-local group of one host.
type Group struct {
	Name string `yaml:"name" json:"name" doc:"group name: lowercase letters, digits, '_' and '-', starting with a letter or '_'" required:"true"`
	GID  int    `yaml:"gid" json:"gid" doc:"numeric group id, 1000-59999, unique in the host" required:"true"`
}

// MountSpec is a lab-local filesystem of one host.
type MountSpec struct {
	Path string `yaml:"path" json:"path" doc:"mount point inside the host, below a private directory (/var, /srv, /opt, /home, /root, /usr, /etc, /tmp); created if missing" required:"true"`
	Type string `yaml:"type" json:"type" doc:"tmpfs or ext4 (an image file on a loop device)" required:"true"`
	Size Size   `yaml:"size" json:"size" doc:"size, e.g. 16Mi (ext4: at least 16Mi)" required:"true"`
	// Inodes sets mkfs.ext4 -N: a small number makes "out of inodes" labs.
	Inodes  int      `yaml:"inodes,omitempty" json:"inodes,omitempty" doc:"ext4 only: number of inodes (default: mkfs.ext4's)"`
	Options []string `yaml:"options,omitempty" json:"options,omitempty" doc:"mount options, e.g. ro, noexec, nosuid, nodev, mode=1777"`
}

// InitKind selects the host's PID 1.
type InitKind string

const (
	InitMini    InitKind = "mini"
	InitSystemd InitKind = "systemd"
)

// File is placed in a host's private view before any fault runs.
type File struct {
	Path    string `yaml:"path" json:"path" doc:"absolute path inside the host" required:"true"`
	Content string `yaml:"content" json:"content" doc:"file content; may reference facts of earlier faults" template:"true"`
	Mode    *Mode  `yaml:"mode,omitempty" json:"mode,omitempty" doc:"octal permission bits, e.g. 0644 (default 0644)"`
	Owner   string `yaml:"owner,omitempty" json:"owner,omitempty" doc:"user[:group] (default root:root)"`
}

// DNSConfig describes a host's resolver files. Unset parts get sensible
// defaults (the host's own name in /etc/hosts, no nameserver).
type DNSConfig struct {
	Nameservers []string          `yaml:"nameservers,omitempty" json:"nameservers,omitempty" doc:"resolv.conf nameserver lines (addresses or host names of the lab)"`
	Search      []string          `yaml:"search,omitempty" json:"search,omitempty" doc:"resolv.conf search domains"`
	Options     []string          `yaml:"options,omitempty" json:"options,omitempty" doc:"resolv.conf options, e.g. timeout:1"`
	Hosts       map[string]string `yaml:"hosts,omitempty" json:"hosts,omitempty" doc:"extra /etc/hosts entries: name -> address or lab host name"`
}

// Link joins two hosts with a veth pair.
type Link struct {
	A string `yaml:"a" json:"a" doc:"first host" required:"true"`
	B string `yaml:"b" json:"b" doc:"second host" required:"true"`
	// Subnet is an IPv4 prefix such as 10.1.2.0/24; default: drawn per
	// instance from an unused range.
	Subnet string `yaml:"subnet,omitempty" json:"subnet,omitempty" doc:"IPv4 prefix, e.g. 10.1.2.0/24 (default: allocated per instance)"`
	// AAddr and BAddr are the host parts (addresses within Subnet); default .1 and .2.
	AAddr string `yaml:"a_addr,omitempty" json:"a_addr,omitempty" doc:"address of a on the link (default: first address of the subnet)"`
	BAddr string `yaml:"b_addr,omitempty" json:"b_addr,omitempty" doc:"address of b on the link (default: second address of the subnet)"`
}

// Route is one route of a host.
type Route struct {
	To  string `yaml:"to" json:"to" doc:"destination prefix or 'default'" required:"true"`
	Via string `yaml:"via" json:"via" doc:"gateway: an address, or the name of a linked host" required:"true"`
}

// Fault is one thing the lab breaks.
type Fault struct {
	ID   string `yaml:"id" json:"id" doc:"identifier, used in fact names (id.fact)" required:"true"`
	Kind string `yaml:"kind" json:"kind" doc:"a registered fault kind, e.g. memory.oom" required:"true"`
	Host string `yaml:"host" json:"host" doc:"the host it applies to" required:"true"`
	// With holds the kind's typed parameters, decoded strictly into the
	// kind's registered params type.
	With any `yaml:"with,omitempty" json:"with,omitempty" doc:"the kind's parameters" kindparams:"fault"`
}

// Check grades the diagnosis (an answer) or the fix (a state probe).
type Check struct {
	ID    string `yaml:"id" json:"id" doc:"identifier" required:"true"`
	Title string `yaml:"title,omitempty" json:"title,omitempty" doc:"what a passing check means, shown to the learner" template:"true"`
	// Ask makes it a diagnosis check: the question the learner answers.
	Ask    string   `yaml:"ask,omitempty" json:"ask,omitempty" doc:"diagnosis: the question (requires answer)" template:"true"`
	Answer *Matcher `yaml:"answer,omitempty" json:"answer,omitempty" doc:"diagnosis: how the learner's answer is judged"`
	// Probe makes it a state check.
	Probe     *Probe    `yaml:"probe,omitempty" json:"probe,omitempty" doc:"state: a probe of the lab run from the host side"`
	StableFor *Duration `yaml:"stable_for,omitempty" json:"stable_for,omitempty" doc:"state: pass only if the probe holds continuously this long"`
	Needs     []string  `yaml:"needs,omitempty" json:"needs,omitempty" doc:"checks that must pass first; otherwise this one is blocked"`
	// Broken says whether the fault breaks this state check (default
	// true): labctl test expects it to fail before the fix.
	Broken *bool `yaml:"broken,omitempty" json:"broken,omitempty" doc:"state: the fault makes this probe fail (default true); labctl test relies on it"`
}

// IsAnswer reports whether c is a diagnosis check.
func (c *Check) IsAnswer() bool { return c.Answer != nil }

// Matcher judges an answer. Exactly one of the comparison fields is set.
type Matcher struct {
	Equals        string   `yaml:"equals,omitempty" json:"equals,omitempty" doc:"equal after trimming (case-insensitive unless case_sensitive)" template:"true"`
	OneOf         []string `yaml:"oneOf,omitempty" json:"oneOf,omitempty" doc:"equal to any of these" template:"true"`
	Regex         string   `yaml:"regex,omitempty" json:"regex,omitempty" doc:"RE2 regular expression the whole answer must match" template:"true"`
	Number        *Number  `yaml:"number,omitempty" json:"number,omitempty" doc:"a number, with units and tolerance"`
	PID           string   `yaml:"pid,omitempty" json:"pid,omitempty" doc:"the answer is this PID (template over a fact)" template:"true"`
	Contains      string   `yaml:"contains,omitempty" json:"contains,omitempty" doc:"the answer contains this" template:"true"`
	Hash          string   `yaml:"hash,omitempty" json:"hash,omitempty" doc:"salted hash of a static answer (labctl hash)"`
	CaseSensitive bool     `yaml:"case_sensitive,omitempty" json:"case_sensitive,omitempty" doc:"compare case-sensitively"`
}

// Number is a numeric expectation. Value may carry a unit (64Mi, 1.5G,
// 10s) or be a template over a fact.
type Number struct {
	Value     string `yaml:"value" json:"value" doc:"expected value, e.g. 64Mi, 67108864, 10s, or a fact template" required:"true" template:"true"`
	Tolerance string `yaml:"tolerance,omitempty" json:"tolerance,omitempty" doc:"allowed difference: absolute (1Mi) or relative (5%)"`
}

// Probe is a state check's probe: a registered kind, the host it runs
// against, and the kind's parameters inline.
type Probe struct {
	Kind string `yaml:"kind" json:"kind" doc:"a registered probe kind, e.g. process, command, connect" required:"true"`
	Host string `yaml:"host,omitempty" json:"host,omitempty" doc:"the host probed (default: the only host)"`
	// Params are the remaining keys of the probe mapping, decoded strictly
	// into the kind's registered params type.
	Params any `yaml:"-" json:"-" kindparams:"probe"`
}

// Hint is shown by `labctl hint` once its gate is open. In YAML a plain
// string is a hint without a gate.
type Hint struct {
	Text string `yaml:"text" json:"text" doc:"Markdown hint; may reference facts" required:"true" template:"true"`
	// After opens the gate this long after `up`.
	After *Duration `yaml:"after,omitempty" json:"after,omitempty" doc:"shown only this long after up"`
	// WhenFailing opens the gate while any of these checks fails.
	WhenFailing []string `yaml:"when_failing,omitempty" json:"when_failing,omitempty" doc:"shown only while one of these checks fails"`
}

// Solution is the reference fix.
type Solution struct {
	Answers map[string]string `yaml:"answers,omitempty" json:"answers,omitempty" doc:"check id -> answer; may reference facts" template:"true"`
	Run     []Step            `yaml:"run,omitempty" json:"run,omitempty" doc:"commands run inside the hosts, in order"`
}

// WrongFix is a plausible fix that must leave at least one check failing.
type WrongFix struct {
	Name string `yaml:"name" json:"name" doc:"what the learner might try" required:"true"`
	Run  []Step `yaml:"run" json:"run" doc:"commands run inside the hosts" required:"true"`
	// Fails names checks that must still fail afterwards (default: any).
	Fails []string `yaml:"fails,omitempty" json:"fails,omitempty" doc:"checks that must still fail afterwards (default: at least one)"`
}

// Step runs one command inside a host: a shell script (Sh, run by
// /bin/sh -c) or an argv.
type Step struct {
	Host string   `yaml:"host,omitempty" json:"host,omitempty" doc:"the host (default: the only host)"`
	Sh   string   `yaml:"sh,omitempty" json:"sh,omitempty" doc:"shell script run with /bin/sh -c; may reference facts" template:"true"`
	Argv []string `yaml:"argv,omitempty" json:"argv,omitempty" doc:"argv run directly; may reference facts" template:"true"`
	// Wait is how long the step may take (default 30s).
	Timeout *Duration `yaml:"timeout,omitempty" json:"timeout,omitempty" doc:"how long the step may take (default 30s)"`
}

// HostByName returns the named host, or nil.
func (l *Lab) HostByName(name string) *Host {
	for _, h := range l.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// CheckByID returns the check with that id, or nil.
func (l *Lab) CheckByID(id string) *Check {
	for i := range l.Checks {
		if l.Checks[i].ID == id {
			return &l.Checks[i]
		}
	}
	return nil
}
