package labs

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Validation runs after decoding, over the typed Lab, and points at nodes
// through the loader's position table. It fills in defaults that depend
// on the whole lab (the only host of probes and steps).

var (
	nameRe     = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	idRe       = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
	hostnameRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)
	ownerPart  = `([a-z_][a-z0-9_-]*\$?|[0-9]+)`
	ownerRe    = regexp.MustCompile(`^` + ownerPart + `(:` + ownerPart + `)?$`)
	percentRe  = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?%$`)
	hashRe     = regexp.MustCompile(`^sha256:[0-9a-f]{32}:[0-9a-f]{64}$`)
)

const (
	maxNameLen     = 40
	maxHostNameLen = 12
	minMemory      = 4 << 20
	minPids        = 8
)

// forbiddenRoots are trees a lab may not place files in: they belong to
// the kernel or to labctl itself.
var forbiddenRoots = []string{"/proc", "/sys", "/dev", "/run/labctl"}

func (d *loader) validate(l *Lab) {
	d.validating = true
	labNode := d.at(l)
	if l.APIVersion != "" && l.APIVersion != APIVersion {
		d.errorf(d.at(&l.APIVersion), "apiVersion: unsupported version %q; this labctl reads %s", l.APIVersion, APIVersion)
	}
	if l.Name != "" {
		d.checkName(d.at(&l.Name), "name", l.Name, maxNameLen)
	}
	if l.Difficulty != "" {
		switch l.Difficulty {
		case Beginner, Intermediate, Advanced:
		default:
			d.errorf(d.at(&l.Difficulty), "difficulty: %q is not one of beginner, intermediate, advanced", l.Difficulty)
		}
	}
	if n := d.at(&l.Duration); n != nil && !isNull(n) && l.Duration <= 0 {
		d.errorf(n, "duration: must be greater than 0")
	}
	if n := d.at(&l.Topics); n != nil && !isNull(n) && len(l.Topics) == 0 {
		d.errorf(n, "topics: list at least one topic")
	}
	for i := range l.Topics {
		if strings.TrimSpace(l.Topics[i]) == "" {
			d.errorf(d.at(&l.Topics[i], &l.Topics), "topics[%d]: must not be empty", i)
		}
	}
	if n := d.at(&l.Hosts); n != nil && !isNull(n) && len(l.Hosts) == 0 {
		d.errorf(n, "hosts: define at least one host")
	}
	hostNames := make([]string, len(l.Hosts))
	for i, h := range l.Hosts {
		hostNames[i] = h.Name
	}
	d.validateHosts(l)
	d.validateLinks(l)
	d.validateRoutes(l)
	d.validateFaults(l)
	checkIDs := d.validateChecks(l)
	d.validateHints(l, checkIDs)
	d.validateSolution(l, labNode)
	d.validateWrongFixes(l, checkIDs)
	d.validateTemplates(l)
}

func (d *loader) checkName(n *yaml.Node, what, name string, maxLen int) bool {
	if !nameRe.MatchString(name) {
		d.errorf(n, "%s: %q is not a valid name: use lowercase letters, digits and dashes, starting and ending with a letter or digit", what, name)
		return false
	}
	if len(name) > maxLen {
		d.errorf(n, "%s: %q is longer than %d characters", what, name, maxLen)
		return false
	}
	return true
}

func hostList(l *Lab) string {
	names := make([]string, len(l.Hosts))
	for i, h := range l.Hosts {
		names[i] = h.Name
	}
	if len(names) == 0 {
		return "the lab has no hosts"
	}
	return "hosts are: " + strings.Join(names, ", ")
}

func (d *loader) unknownHost(n *yaml.Node, what, name string, l *Lab) {
	names := make([]string, len(l.Hosts))
	for i, h := range l.Hosts {
		names[i] = h.Name
	}
	msg := fmt.Sprintf("%s: unknown host %q", what, name)
	if s := suggest(name, names); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	d.errorf(n, "%s; %s", msg, hostList(l))
}

func (d *loader) validateHosts(l *Lab) {
	for _, h := range l.Hosts {
		hn := d.at(&h.Name)
		if !nameRe.MatchString(h.Name) {
			d.errorf(hn, "host name %q is not valid: use lowercase letters, digits and dashes, starting and ending with a letter or digit", h.Name)
		} else if len(h.Name) > maxHostNameLen {
			d.errorf(hn, "host name %q is longer than %d characters (it becomes part of interface and namespace names)", h.Name, maxHostNameLen)
		} else if h.Name == "instance" {
			d.errorf(hn, "host name \"instance\" is reserved for the instance.* facts")
		}
		if h.Hostname != "" && (len(h.Hostname) > 64 || !hostnameRe.MatchString(h.Hostname)) {
			d.errorf(d.at(&h.Hostname), "hostname: %q is not a valid hostname", h.Hostname)
		}
		switch h.Init {
		case "", InitMini, InitSystemd:
		default:
			d.errorf(d.at(&h.Init), "init: %q is not one of mini, systemd", h.Init)
		}
		if h.Memory != nil && *h.Memory < minMemory {
			d.errorf(d.at(&h.Memory), "memory: %s is below the minimum of %s", *h.Memory, Size(minMemory))
		}
		if h.Pids != nil && *h.Pids < minPids {
			d.errorf(d.at(&h.Pids), "pids: %d is below the minimum of %d", *h.Pids, minPids)
		}
		if h.CPU != nil && *h.CPU <= 0 {
			d.errorf(d.at(&h.CPU), "cpu: must be greater than 0")
		}
		paths := map[string]*yaml.Node{}
		for i := range h.Files {
			f := &h.Files[i]
			pn := d.at(&f.Path, f)
			switch {
			case f.Path == "":
			case !path.IsAbs(f.Path):
				d.errorf(pn, "path: %q is not an absolute path", f.Path)
			case path.Clean(f.Path) != f.Path:
				d.errorf(pn, "path: %q is not clean; write %q", f.Path, path.Clean(f.Path))
			default:
				for _, root := range forbiddenRoots {
					if f.Path == root || strings.HasPrefix(f.Path, root+"/") {
						d.errorf(pn, "path: %q is under %s, where labs may not place files", f.Path, root)
					}
				}
				if first, dup := paths[f.Path]; dup {
					d.errorf(pn, "path: %q is already placed (line %d)", f.Path, first.Line)
				}
				paths[f.Path] = pn
			}
			if f.Owner != "" && !ownerRe.MatchString(f.Owner) {
				d.errorf(d.at(&f.Owner), "owner: %q is not user[:group]", f.Owner)
			}
		}
		d.validateAccounts(h)
		d.validateMounts(h)
		if h.DNS != nil {
			for i, ns := range h.DNS.Nameservers {
				if _, err := netip.ParseAddr(ns); err != nil && l.HostByName(ns) == nil {
					d.errorf(d.at(&h.DNS.Nameservers[i]), "nameservers[%d]: %q is neither an IP address nor a host of this lab", i, ns)
				}
			}
			for _, name := range sortedKeys(h.DNS.Hosts) {
				addr := h.DNS.Hosts[name]
				if _, err := netip.ParseAddr(addr); err != nil && l.HostByName(addr) == nil {
					_, vn := d.mapNodes(h.DNS.Hosts, name)
					d.errorf(vn, "hosts.%s: %q is neither an IP address nor a host of this lab", name, addr)
				}
			}
		}
	}
}

func (d *loader) validateLinks(l *Lab) {
	pairs := map[[2]string]*yaml.Node{}
	for i := range l.Links {
		ln := &l.Links[i]
		node := d.at(ln)
		okA := ln.A == "" || l.HostByName(ln.A) != nil
		okB := ln.B == "" || l.HostByName(ln.B) != nil
		if !okA {
			d.unknownHost(d.at(&ln.A), "a", ln.A, l)
		}
		if !okB {
			d.unknownHost(d.at(&ln.B), "b", ln.B, l)
		}
		if ln.A != "" && ln.A == ln.B {
			d.errorf(node, "link joins host %q to itself", ln.A)
		} else if ln.A != "" && ln.B != "" {
			key := [2]string{min(ln.A, ln.B), max(ln.A, ln.B)}
			if first, dup := pairs[key]; dup {
				d.errorf(node, "duplicate link between %q and %q (first at line %d)", key[0], key[1], first.Line)
			} else {
				pairs[key] = node
			}
		}
		var prefix netip.Prefix
		havePrefix := false
		if ln.Subnet != "" {
			p, err := netip.ParsePrefix(ln.Subnet)
			switch {
			case err != nil || !p.Addr().Is4():
				d.errorf(d.at(&ln.Subnet), "subnet: %q is not an IPv4 prefix such as 10.1.2.0/24", ln.Subnet)
			case p.Masked() != p:
				d.errorf(d.at(&ln.Subnet), "subnet: %q is not a network address; write %s", ln.Subnet, p.Masked())
			case p.Bits() > 30:
				d.errorf(d.at(&ln.Subnet), "subnet: %s has no room for two host addresses (use /30 or larger)", p)
			default:
				prefix, havePrefix = p, true
			}
		}
		addrs := map[string]netip.Addr{}
		for _, side := range []struct {
			name string
			addr *string
		}{{"a_addr", &ln.AAddr}, {"b_addr", &ln.BAddr}} {
			if *side.addr == "" {
				continue
			}
			n := d.at(side.addr)
			a, err := netip.ParseAddr(*side.addr)
			switch {
			case err != nil || !a.Is4():
				d.errorf(n, "%s: %q is not an IPv4 address", side.name, *side.addr)
			case ln.Subnet == "":
				d.errorf(n, "%s: a fixed address needs a fixed subnet", side.name)
			case !havePrefix:
			case !prefix.Contains(a):
				d.errorf(n, "%s: %s is not inside subnet %s", side.name, a, prefix)
			case a == prefix.Addr() || a == lastAddr(prefix):
				d.errorf(n, "%s: %s is the network or broadcast address of %s", side.name, a, prefix)
			default:
				addrs[side.name] = a
			}
		}
		if a, ok := addrs["a_addr"]; ok && addrs["b_addr"] == a {
			d.errorf(d.at(&ln.BAddr), "b_addr: %s is also a_addr", a)
		}
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= (1 << (32 - p.Bits())) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func linked(l *Lab, a, b string) bool {
	for _, ln := range l.Links {
		if (ln.A == a && ln.B == b) || (ln.A == b && ln.B == a) {
			return true
		}
	}
	return false
}

func (d *loader) validateRoutes(l *Lab) {
	for _, h := range l.Hosts {
		for i := range h.Routes {
			r := &h.Routes[i]
			if r.To != "" && r.To != "default" {
				if p, err := netip.ParsePrefix(r.To); err != nil || !p.Addr().Is4() {
					d.errorf(d.at(&r.To), "to: %q is neither default nor an IPv4 prefix", r.To)
				}
			}
			if r.Via != "" {
				if _, err := netip.ParseAddr(r.Via); err != nil && !linked(l, h.Name, r.Via) {
					d.errorf(d.at(&r.Via), "via: %q is neither an address nor a host linked to %q", r.Via, h.Name)
				}
			}
		}
	}
}

func (d *loader) validateFaults(l *Lab) {
	ids := map[string]*yaml.Node{}
	for i := range l.Faults {
		f := &l.Faults[i]
		if f.ID != "" {
			n := d.at(&f.ID)
			switch {
			case !idRe.MatchString(f.ID):
				d.errorf(n, "id: %q is not a valid id: use lowercase letters, digits, '_' and '-', starting with a letter", f.ID)
			case ids[f.ID] != nil:
				d.errorf(n, "id: duplicate fault id %q (first at line %d)", f.ID, ids[f.ID].Line)
			case l.HostByName(f.ID) != nil || f.ID == "instance":
				d.errorf(n, "id: fault id %q clashes with the built-in facts %s.*; choose another id", f.ID, f.ID)
			}
			if ids[f.ID] == nil {
				ids[f.ID] = n
			}
		}
		if f.Host == "" {
			continue
		}
		h := l.HostByName(f.Host)
		if h == nil {
			d.unknownHost(d.at(&f.Host), "host", f.Host, l)
			continue
		}
		if hv, ok := f.With.(HostParamValidator); ok {
			if pn, valid := d.validParams[f.With]; valid {
				if err := hv.ValidateHost(h); err != nil {
					d.paramError(err, pn.fields, pn.fallback...)
				}
			}
		}
		kind, ok := LookupFault(f.Kind)
		if !ok || len(kind.Inits) == 0 {
			continue
		}
		init := h.Init
		if init == "" {
			init = InitMini
		}
		supported := false
		var names []string
		for _, k := range kind.Inits {
			names = append(names, string(k))
			supported = supported || k == init
		}
		if !supported {
			d.errorf(d.at(&f.Host), "host: fault kind %s does not run on host %q with init %s (it supports init: %s)", f.Kind, f.Host, init, strings.Join(names, ", "))
		}
	}
}

// validateChecks returns the set of check ids.
func (d *loader) validateChecks(l *Lab) map[string]bool {
	ids := map[string]*yaml.Node{}
	for i := range l.Checks {
		c := &l.Checks[i]
		node := d.at(c)
		if c.ID != "" {
			n := d.at(&c.ID)
			switch {
			case !idRe.MatchString(c.ID):
				d.errorf(n, "id: %q is not a valid id: use lowercase letters, digits, '_' and '-', starting with a letter", c.ID)
			case ids[c.ID] != nil:
				d.errorf(n, "id: duplicate check id %q (first at line %d)", c.ID, ids[c.ID].Line)
			}
			if ids[c.ID] == nil {
				ids[c.ID] = n
			}
		}
		name := c.ID
		switch {
		case c.Answer == nil && c.Probe == nil:
			d.errorf(node, "check %q needs either answer (a diagnosis) or probe (a state check)", name)
		case c.Answer != nil && c.Probe != nil:
			d.errorf(d.at(&c.Probe), "check %q has both answer and probe; make them two checks", name)
		case c.Answer != nil:
			if c.Ask == "" {
				d.errorf(node, "check %q: an answer check needs ask (the question)", name)
			}
			if c.StableFor != nil {
				d.errorf(d.at(&c.StableFor), "stable_for: only probe checks can require stability")
			}
			if c.Broken != nil {
				d.errorf(d.at(&c.Broken), "broken: only probe checks are broken by the fault")
			}
			d.validateMatcher(c.Answer)
		case c.Probe != nil:
			if c.Ask != "" {
				d.errorf(d.at(&c.Ask), "ask: only answer checks ask a question")
			}
			d.validateProbe(l, c.Probe)
		}
	}
	known := map[string]bool{}
	for id := range ids {
		known[id] = true
	}
	for i := range l.Checks {
		c := &l.Checks[i]
		for j, need := range c.Needs {
			n := d.at(&c.Needs[j], &c.Needs)
			switch {
			case need == c.ID:
				d.errorf(n, "needs: check %q needs itself", c.ID)
			case !known[need]:
				d.errorf(n, "needs: unknown check %q%s", need, didYouMean(need, sortedKeys(known)))
			}
		}
	}
	d.findNeedsCycles(l)
	return known
}

func didYouMean(name string, candidates []string) string {
	if s := suggest(name, candidates); s != "" {
		return fmt.Sprintf("; did you mean %q?", s)
	}
	return ""
}

// findNeedsCycles reports each cycle of needs once, at its first check in
// file order.
func (d *loader) findNeedsCycles(l *Lab) {
	const (
		unvisited = iota
		active
		done
	)
	state := map[string]int{}
	var stack []string
	reported := false
	var visit func(id string)
	visit = func(id string) {
		state[id] = active
		stack = append(stack, id)
		c := l.CheckByID(id)
		for _, need := range c.Needs {
			if need == id || l.CheckByID(need) == nil {
				continue // reported already
			}
			switch state[need] {
			case unvisited:
				visit(need)
			case active:
				start := 0
				for i, s := range stack {
					if s == need {
						start = i
					}
				}
				cycle := append(append([]string{}, stack[start:]...), need)
				first := l.CheckByID(need)
				if !reported {
					d.errorf(d.at(&first.Needs, first), "needs: cycle %s", strings.Join(cycle, " -> "))
				}
				reported = true
			}
		}
		stack = stack[:len(stack)-1]
		state[id] = done
	}
	for i := range l.Checks {
		if id := l.Checks[i].ID; id != "" && state[id] == unvisited {
			visit(id)
		}
	}
}

func (d *loader) validateMatcher(m *Matcher) {
	var set []string
	if m.Equals != "" {
		set = append(set, "equals")
	}
	if m.OneOf != nil {
		set = append(set, "oneOf")
	}
	if m.Regex != "" {
		set = append(set, "regex")
	}
	if m.Number != nil {
		set = append(set, "number")
	}
	if m.PID != "" {
		set = append(set, "pid")
	}
	if m.Contains != "" {
		set = append(set, "contains")
	}
	if m.Hash != "" {
		set = append(set, "hash")
	}
	node := d.at(m)
	switch len(set) {
	case 0:
		d.errorf(node, "answer needs one of equals, oneOf, regex, number, pid, contains, hash")
		return
	case 1:
	default:
		d.errorf(node, "answer sets %s; use exactly one", strings.Join(set, " and "))
		return
	}
	switch set[0] {
	case "oneOf":
		if len(m.OneOf) == 0 {
			d.errorf(d.at(&m.OneOf), "oneOf: list at least one answer")
		}
	case "regex":
		if !IsTemplate(m.Regex) {
			if _, err := regexp.Compile(m.Regex); err != nil {
				d.errorf(d.at(&m.Regex), "regex: %v", err)
			}
		}
	case "number":
		d.validateNumber(m.Number)
	case "pid":
		if !IsTemplate(m.PID) {
			if p, err := strconv.Atoi(m.PID); err != nil || p <= 0 {
				d.errorf(d.at(&m.PID), "pid: %q is neither a PID nor a template over a fact", m.PID)
			}
		}
	case "hash":
		if !hashRe.MatchString(m.Hash) {
			d.errorf(d.at(&m.Hash), "hash: not a hash made by labctl hash (want sha256:<32 hex salt>:<64 hex digest>)")
		} else if m.CaseSensitive {
			d.errorf(d.at(&m.CaseSensitive), "case_sensitive: hashed answers are stored lower-cased and cannot be compared case-sensitively")
		}
	}
}

// numberClass says how a number with a unit is read.
type numberClass int

const (
	classPlain numberClass = iota
	classBytes
	classTime
	classInvalid
)

// parseNumber reads an expected number: a plain number, a byte size with
// a unit (64Mi, 1.5G) or a duration (10s); the result is in bytes, seconds
// or as written.
func parseNumber(s string) (float64, numberClass) {
	t := strings.TrimSpace(s)
	if f, err := strconv.ParseFloat(t, 64); err == nil {
		return f, classPlain
	}
	if sz, err := ParseSize(t); err == nil {
		return float64(sz), classBytes
	}
	if du, err := ParseDuration(t); err == nil {
		return du.D().Seconds(), classTime
	}
	return 0, classInvalid
}

func (d *loader) validateNumber(num *Number) {
	class := classInvalid
	if !IsTemplate(num.Value) {
		_, class = parseNumber(num.Value)
		if class == classInvalid {
			d.errorf(d.at(&num.Value, num), "value: %q is not a number (optionally with a unit such as 64Mi or 10s)", num.Value)
			return
		}
	}
	if num.Tolerance == "" || percentRe.MatchString(num.Tolerance) {
		return
	}
	_, tc := parseNumber(num.Tolerance)
	ok := tc != classInvalid
	if class != classInvalid {
		// An absolute tolerance is in the value's unit (a plain number
		// fits any unit: it counts bytes or seconds).
		ok = tc == class || tc == classPlain
	}
	if !ok {
		d.errorf(d.at(&num.Tolerance), "tolerance: %q is neither an amount in the value's unit nor a percentage such as 5%%", num.Tolerance)
	}
}

func (d *loader) validateProbe(l *Lab, p *Probe) {
	kind, known := LookupProbe(p.Kind)
	if known && kind.NoHost {
		if p.Host != "" {
			d.errorf(d.at(&p.Host), "host: probe kind %s does not run against a host", p.Kind)
		}
		return
	}
	d.defaultHost(l, &p.Host, d.at(p), "probe")
}

// defaultHost checks a host reference that defaults to the only host.
func (d *loader) defaultHost(l *Lab, host *string, parent *yaml.Node, what string) {
	if *host != "" {
		if l.HostByName(*host) == nil {
			d.unknownHost(d.at(host), "host", *host, l)
		}
		return
	}
	switch len(l.Hosts) {
	case 0:
	case 1:
		*host = l.Hosts[0].Name
	default:
		d.errorf(parent, "%s: host is required because the lab has several hosts (%s)", what, strings.TrimPrefix(hostList(l), "hosts are: "))
	}
}

func (d *loader) validateHints(l *Lab, checks map[string]bool) {
	for i := range l.Hints {
		h := &l.Hints[i]
		for j, id := range h.WhenFailing {
			if !checks[id] {
				d.errorf(d.at(&h.WhenFailing[j], &h.WhenFailing), "when_failing: unknown check %q%s", id, didYouMean(id, sortedKeys(checks)))
			}
		}
	}
}

func (d *loader) validateSteps(l *Lab, steps []Step) {
	for i := range steps {
		s := &steps[i]
		node := d.at(s)
		switch {
		case s.Sh == "" && s.Argv == nil:
			d.errorf(node, "step needs sh (a shell script) or argv")
		case s.Sh != "" && s.Argv != nil:
			d.errorf(node, "step has both sh and argv; use one")
		case s.Argv != nil && len(s.Argv) == 0:
			d.errorf(d.at(&s.Argv), "argv: must not be empty")
		}
		d.defaultHost(l, &s.Host, node, "step")
	}
}

func (d *loader) validateSolution(l *Lab, labNode *yaml.Node) {
	sol := l.Solution
	if sol == nil {
		return
	}
	for _, id := range sortedKeys(sol.Answers) {
		kn, _ := d.mapNodes(sol.Answers, id)
		c := l.CheckByID(id)
		switch {
		case c == nil:
			var answerIDs []string
			for _, c := range l.Checks {
				if c.IsAnswer() {
					answerIDs = append(answerIDs, c.ID)
				}
			}
			d.errorf(kn, "answers: unknown check %q%s", id, didYouMean(id, answerIDs))
		case !c.IsAnswer():
			d.errorf(kn, "answers: check %q is a state check; only answer checks take answers", id)
		}
	}
	node := d.at(&l.Solution, labNode)
	for i := range l.Checks {
		c := &l.Checks[i]
		if c.IsAnswer() && c.ID != "" {
			if _, ok := sol.Answers[c.ID]; !ok {
				d.errorf(node, "solution: no answer for check %q", c.ID)
			}
		}
	}
	d.validateSteps(l, sol.Run)
}

func (d *loader) validateWrongFixes(l *Lab, checks map[string]bool) {
	for i := range l.WrongFixes {
		w := &l.WrongFixes[i]
		if w.Run != nil && len(w.Run) == 0 {
			d.errorf(d.at(&w.Run), "run: list at least one step")
		}
		d.validateSteps(l, w.Run)
		for j, id := range w.Fails {
			if !checks[id] {
				d.errorf(d.at(&w.Fails[j], &w.Fails), "fails: unknown check %q%s", id, didYouMean(id, sortedKeys(checks)))
			}
		}
	}
}

// validateTemplates parses every template-tagged string and checks that
// each fact it references exists where it is used.
func (d *loader) validateTemplates(l *Lab) {
	builtin := map[string]bool{}
	for _, f := range BuiltinFacts(l) {
		builtin[f.Name] = true
	}
	// faultFacts: fact name -> index of the fault that provides it.
	faultFacts := map[string]int{}
	// unknownKind: fault ids whose kind is unknown; their facts cannot be
	// checked and the kind error has been reported already.
	unknownKind := map[string]bool{}
	faultIndex := map[string]int{}
	for i, f := range l.Faults {
		if _, dup := faultIndex[f.ID]; !dup {
			faultIndex[f.ID] = i
		}
		kind, ok := LookupFault(f.Kind)
		if !ok {
			unknownKind[f.ID] = true
			continue
		}
		for _, fs := range kind.Facts {
			name := f.ID + "." + fs.Name
			if _, dup := faultFacts[name]; !dup {
				faultFacts[name] = i
			}
		}
	}
	all := append(sortedKeys(builtin), sortedKeys(faultFacts)...)
	for _, site := range d.templates {
		refs, dynamic, err := templateRefs(site.text)
		if err != nil {
			d.errorf(site.node, "bad template: %v", err)
			continue
		}
		if dynamic > 0 {
			d.errorf(site.node, "fact takes one constant fact name, e.g. {{ fact \"app.hostname\" }}")
		}
		for _, ref := range refs {
			if builtin[ref] {
				continue
			}
			idx, isFault := faultFacts[ref]
			if !isFault {
				id, _, _ := strings.Cut(ref, ".")
				if unknownKind[id] {
					continue
				}
				d.errorf(site.node, "unknown fact %q%s", ref, didYouMean(ref, all))
				continue
			}
			switch {
			case site.scope == scopeBuiltin:
				d.errorf(site.node, "fact %q cannot be used in host files: files are placed before faults run, so only built-in facts (such as %s.hostname) are known", ref, firstHost(l))
			case site.scope >= 0 && idx >= site.scope:
				d.errorf(site.node, "fact %q is used before fault %q runs", ref, l.Faults[idx].ID)
			}
		}
	}
}

func firstHost(l *Lab) string {
	if len(l.Hosts) == 0 {
		return "HOST"
	}
	return l.Hosts[0].Name
}

// Lab-local accounts and filesystems (Host.Users, Groups, Mounts).

var accountRe = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

const (
	// Lab accounts live in a band of their own: below it are the
	// machine's system accounts and its first human users' ids are
	// reused there by convention; above it nobody (65534) and
	// systemd's dynamic users.
	minLabID = 1000
	maxLabID = 59999
	// minExt4 leaves room for the journal and a few files.
	minExt4  = 16 << 20
	maxMount = 1 << 30
)

// mountTops are the top-level directories a lab-local filesystem may be
// mounted below: the host's private copies (overlays) and its private
// /tmp. Anything else is shared with the machine, and a mount point
// cannot be created there.
var mountTops = []string{"/etc", "/home", "/opt", "/root", "/srv", "/tmp", "/usr", "/var"}

func (d *loader) validateAccounts(h *Host) {
	groups := map[string]*yaml.Node{} // name -> first declaration
	gids := map[int]*yaml.Node{}
	for i := range h.Groups {
		g := &h.Groups[i]
		if n := d.at(&g.Name, g); g.Name != "" {
			switch {
			case !accountRe.MatchString(g.Name):
				d.errorf(n, "name: %q is not a valid group name: use up to 32 lowercase letters, digits, '_' and '-', starting with a letter or '_'", g.Name)
			case groups[g.Name] != nil:
				d.errorf(n, "name: duplicate group %q (first at line %d)", g.Name, groups[g.Name].Line)
			case g.Name == "root":
				d.errorf(n, "name: group \"root\" is the machine's; lab groups are new groups")
			default:
				groups[g.Name] = n
			}
		}
		if n := d.at(&g.GID, g); n != nil && !isNull(n) {
			switch {
			case g.GID < minLabID || g.GID > maxLabID:
				d.errorf(n, "gid: %d is outside %d-%d, the range of lab accounts", g.GID, minLabID, maxLabID)
			case gids[g.GID] != nil:
				d.errorf(n, "gid: %d is already used by a group (line %d)", g.GID, gids[g.GID].Line)
			default:
				gids[g.GID] = n
			}
		}
	}
	users := map[string]*yaml.Node{}
	uids := map[int]*yaml.Node{}
	// A user without a group gets a group of its own name and gid = uid.
	for i := range h.Users {
		u := &h.Users[i]
		if u.Group == "" && u.Name != "" && accountRe.MatchString(u.Name) {
			n := d.at(&u.Name, u)
			if first := groups[u.Name]; first != nil {
				d.errorf(n, "name: user %q has no group, so it gets a group of its own name, but group %q is declared (line %d); set group: %s", u.Name, u.Name, first.Line, u.Name)
			} else if first := gids[u.UID]; first != nil && u.UID != 0 {
				d.errorf(n, "uid: user %q has no group, so it gets gid %d, which a group already uses (line %d); set group", u.Name, u.UID, first.Line)
			} else {
				groups[u.Name] = n
				gids[u.UID] = n
			}
		}
	}
	for i := range h.Users {
		u := &h.Users[i]
		if n := d.at(&u.Name, u); u.Name != "" {
			switch {
			case !accountRe.MatchString(u.Name):
				d.errorf(n, "name: %q is not a valid user name: use up to 32 lowercase letters, digits, '_' and '-', starting with a letter or '_'", u.Name)
			case users[u.Name] != nil:
				d.errorf(n, "name: duplicate user %q (first at line %d)", u.Name, users[u.Name].Line)
			case u.Name == "root":
				d.errorf(n, "name: user \"root\" is the machine's; lab users are new accounts")
			default:
				users[u.Name] = n
			}
		}
		if n := d.at(&u.UID, u); n != nil && !isNull(n) {
			switch {
			case u.UID < minLabID || u.UID > maxLabID:
				d.errorf(n, "uid: %d is outside %d-%d, the range of lab accounts (uid 0 is root, and only root)", u.UID, minLabID, maxLabID)
			case uids[u.UID] != nil:
				d.errorf(n, "uid: %d is already used by a user (line %d)", u.UID, uids[u.UID].Line)
			default:
				uids[u.UID] = n
			}
		}
		if u.Group != "" && groups[u.Group] == nil {
			d.errorf(d.at(&u.Group), "group: unknown group %q%s; declare it under the host's groups", u.Group, didYouMean(u.Group, sortedKeys(groups)))
		}
		seen := map[string]bool{}
		for j, g := range u.Groups {
			n := d.at(&u.Groups[j], &u.Groups)
			switch {
			case groups[g] == nil:
				d.errorf(n, "groups[%d]: unknown group %q%s; declare it under the host's groups", j, g, didYouMean(g, sortedKeys(groups)))
			case seen[g]:
				d.errorf(n, "groups[%d]: %q is listed twice", j, g)
			}
			seen[g] = true
		}
		for _, f := range []struct {
			name string
			val  *string
		}{{"home", &u.Home}, {"shell", &u.Shell}} {
			v := *f.val
			if v != "" && (!path.IsAbs(v) || path.Clean(v) != v || strings.ContainsAny(v, ":\n")) {
				d.errorf(d.at(f.val), "%s: %q is not an absolute, clean path without ':'", f.name, v)
			}
		}
	}
}

func (d *loader) validateMounts(h *Host) {
	paths := map[string]*yaml.Node{}
	for i := range h.Mounts {
		m := &h.Mounts[i]
		pn := d.at(&m.Path, m)
		switch {
		case m.Path == "":
		case !path.IsAbs(m.Path):
			d.errorf(pn, "path: %q is not an absolute path", m.Path)
		case path.Clean(m.Path) != m.Path:
			d.errorf(pn, "path: %q is not clean; write %q", m.Path, path.Clean(m.Path))
		case !underMountTop(m.Path):
			d.errorf(pn, "path: %q is not below a directory private to the host; mount below one of %s", m.Path, strings.Join(mountTops, ", "))
		case paths[m.Path] != nil:
			d.errorf(pn, "path: %q is already mounted (line %d)", m.Path, paths[m.Path].Line)
		default:
			paths[m.Path] = pn
		}
		switch m.Type {
		case "", "tmpfs", "ext4":
		default:
			d.errorf(d.at(&m.Type), "type: %q is not one of tmpfs, ext4", m.Type)
		}
		if n := d.at(&m.Size); n != nil && !isNull(n) {
			switch {
			case m.Size <= 0:
				d.errorf(n, "size: must be greater than 0")
			case m.Size > maxMount:
				d.errorf(n, "size: %s is above the maximum of %s", m.Size, Size(maxMount))
			case m.Type == "ext4" && m.Size < minExt4:
				d.errorf(n, "size: an ext4 filesystem needs at least %s, got %s", Size(minExt4), m.Size)
			}
		}
		if n := d.at(&m.Inodes); n != nil && !isNull(n) {
			switch {
			case m.Type != "ext4":
				d.errorf(n, "inodes: only an ext4 filesystem has a fixed number of inodes (tmpfs: use options: [nr_inodes=N])")
			case m.Inodes < 16:
				d.errorf(n, "inodes: %d is below the minimum of 16", m.Inodes)
			}
		}
		for j, o := range m.Options {
			n := d.at(&m.Options[j], &m.Options)
			switch {
			case o == "" || strings.ContainsAny(o, ", \t\n"):
				d.errorf(n, "options[%d]: %q: write one option per list item, without commas or spaces", j, o)
			case strings.HasPrefix(o, "size="):
				d.errorf(n, "options[%d]: use the size field, not %q", j, o)
			case o == "suid" || o == "dev":
				d.errorf(n, "options[%d]: %q: lab filesystems are always nosuid,nodev", j, o)
			}
		}
	}
	// A declared file below a mount point would be hidden by the mount.
	for i := range h.Files {
		f := &h.Files[i]
		for mp := range paths {
			if strings.HasPrefix(f.Path, mp+"/") {
				d.errorf(d.at(&f.Path, f), "path: %q is below mount %s, which would hide it (files are placed before filesystems are mounted)", f.Path, mp)
			}
		}
	}
}

func underMountTop(p string) bool {
	for _, top := range mountTops {
		if strings.HasPrefix(p, top+"/") {
			return true
		}
	}
	return false
}
