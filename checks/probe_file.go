package checks

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/go-cmp/cmp"

	"github.com/labctl/labctl/labs"
)

// FileParams checks a file inside a host.
type FileParams struct {
	Path    string     `yaml:"path" json:"path" doc:"absolute path inside the host" required:"true" template:"true"`
	Exists  *bool      `yaml:"exists,omitempty" json:"exists,omitempty" doc:"the file exists (default true); false: it must not"`
	Mode    *labs.Mode `yaml:"mode,omitempty" json:"mode,omitempty" doc:"permission bits, octal, e.g. 0644"`
	Owner   string     `yaml:"owner,omitempty" json:"owner,omitempty" doc:"user[:group], names as in the host's /etc/passwd and /etc/group, or numeric ids" template:"true"`
	Content string     `yaml:"content,omitempty" json:"content,omitempty" doc:"RE2 expression the content must contain a match of" template:"true"`
	SizeMax *labs.Size `yaml:"size_max,omitempty" json:"size_max,omitempty" doc:"largest size allowed, e.g. 1Mi"`
}

// maxContentRead bounds how much of a file the content check reads: lab
// files are small, and a runaway log must not eat the verifier's memory.
const maxContentRead = 4 << 20

// Validate checks what can be checked before facts are known.
func (p *FileParams) Validate() error {
	if !strings.Contains(p.Path, "{{") && !path.IsAbs(p.Path) {
		return &labs.ParamError{Field: "path", Msg: fmt.Sprintf("%q is not an absolute path", p.Path)}
	}
	if p.Content != "" && !strings.Contains(p.Content, "{{") {
		if _, err := regexp.Compile(p.Content); err != nil {
			return &labs.ParamError{Field: "content", Msg: "invalid regular expression: " + err.Error()}
		}
	}
	if p.Exists != nil && !*p.Exists && (p.Mode != nil || p.Owner != "" || p.Content != "" || p.SizeMax != nil) {
		return &labs.ParamError{Field: "exists", Msg: "exists: false cannot be combined with mode, owner, content or size_max"}
	}
	return nil
}

type fileProber struct{}

func init() {
	Register(labs.ProbeKind{
		Name: "file",
		Doc:  "checks a file inside the host: existence, mode, owner, content, size",
		NewParams: func() any {
			exists := true
			return &FileParams{Exists: &exists}
		},
	}, fileProber{})
}

func (fileProber) Probe(ctx context.Context, t Target, host string, params any) Result {
	p := params.(*FileParams)
	wantExists := p.Exists == nil || *p.Exists
	var contentRE *regexp.Regexp
	if p.Content != "" {
		var err error
		if contentRE, err = regexp.Compile(p.Content); err != nil {
			return errorResult(fmt.Errorf("content: invalid regular expression: %w", err))
		}
	}
	real, err := t.RootPath(host, p.Path)
	if err != nil {
		return errorResult(fmt.Errorf("host %s: %w", host, err))
	}
	res := Result{Wanted: describeFileWant(p, wantExists)}
	real, fi, err := statInHost(t, host, p.Path, real)
	if errors.Is(err, fs.ErrNotExist) {
		res.Seen = p.Path + " does not exist"
		if wantExists {
			res.Message = p.Path + " does not exist"
			return res
		}
		res.Pass, res.Message = true, p.Path+" is gone"
		return res
	}
	if err != nil {
		return errorResult(fmt.Errorf("stat %s: %w", p.Path, err))
	}
	mode := fileMode(fi)
	res.Seen = fmt.Sprintf("%s %s size %d", p.Path, mode, fi.Size())
	fuid, fgid, owned := fileOwner(fi)
	if owned {
		res.Seen += fmt.Sprintf(" owner %d:%d", fuid, fgid)
	}
	if !wantExists {
		res.Message = p.Path + " still exists"
		return res
	}
	// Mode and owner are compared together, so a learner who fixed one of
	// them sees what is still off in a diff.
	var want, got fileAttrs
	var msgs []string
	if p.Mode != nil {
		want.Mode, got.Mode = p.Mode.String(), mode.String()
		if mode != *p.Mode {
			msgs = append(msgs, fmt.Sprintf("%s has mode %s", p.Path, mode))
		}
	}
	if p.Owner != "" {
		uid, gid, err := resolveOwner(t, host, p.Owner)
		if err != nil {
			return errorResult(fmt.Errorf("owner: %w", err))
		}
		want.Owner, got.Owner = ownerString(uid, gid), "unknown"
		if owned {
			seenGID := int(fgid)
			if gid < 0 {
				seenGID = -1
			}
			got.Owner = ownerString(int(fuid), seenGID)
		}
		if !owned || int(fuid) != uid || (gid >= 0 && int(fgid) != gid) {
			msgs = append(msgs, fmt.Sprintf("%s is not owned by %s", p.Path, p.Owner))
		}
	}
	if len(msgs) > 0 {
		res.Message = strings.Join(msgs, "; ")
		res.Diff = cmp.Diff(want, got)
		return res
	}
	if p.SizeMax != nil && fi.Size() > int64(*p.SizeMax) {
		res.Message = fmt.Sprintf("%s is %s, larger than allowed", p.Path, labs.Size(fi.Size()))
		return res
	}
	if contentRE != nil {
		if !fi.Mode().IsRegular() {
			res.Message = p.Path + " is not a regular file"
			return res
		}
		f, err := os.Open(real)
		if err != nil {
			return errorResult(fmt.Errorf("read %s: %w", p.Path, err))
		}
		data, err := io.ReadAll(io.LimitReader(f, maxContentRead))
		f.Close()
		if err != nil {
			return errorResult(fmt.Errorf("read %s: %w", p.Path, err))
		}
		if !contentRE.Match(data) {
			res.Seen += "; content: " + firstLines(string(data), maxShownLines)
			res.Message = p.Path + " does not contain what is expected"
			return res
		}
	}
	res.Pass, res.Message = true, p.Path+" is as expected"
	return res
}

// fileAttrs are the attributes a file probe compares, for its diff.
type fileAttrs struct {
	Mode  string `json:",omitempty"`
	Owner string `json:",omitempty"`
}

// ownerString writes an owner as uid:gid, or uid alone when no group is
// expected.
func ownerString(uid, gid int) string {
	if gid < 0 {
		return strconv.Itoa(uid)
	}
	return fmt.Sprintf("%d:%d", uid, gid)
}

// maxSymlinks is the kernel's limit on symlinks followed in one lookup.
const maxSymlinks = 40

// statInHost stats a host path the way stat(1) inside the host would,
// following symlinks in the last component. It cannot let the kernel
// follow them: an absolute link target would be resolved against the
// machine's root, not the host's, and the probe would read the wrong
// file (or one outside the lab). It returns the machine-side path of
// the final file. A dangling link does not exist, as for test -e.
func statInHost(t Target, host, hostPath, real string) (string, fs.FileInfo, error) {
	for range maxSymlinks {
		fi, err := os.Lstat(real)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			return real, fi, err
		}
		target, err := os.Readlink(real)
		if err != nil {
			return "", nil, err
		}
		if path.IsAbs(target) {
			hostPath = target
		} else {
			hostPath = path.Join(path.Dir(hostPath), target)
		}
		if real, err = t.RootPath(host, hostPath); err != nil {
			return "", nil, err
		}
	}
	return "", nil, fmt.Errorf("%s: too many levels of symbolic links", hostPath)
}

// fileMode returns permission bits plus setuid, setgid and sticky in the
// octal layout of chmod, which is how labs write them.
func fileMode(fi fs.FileInfo) labs.Mode {
	m := labs.Mode(fi.Mode().Perm())
	if fi.Mode()&fs.ModeSetuid != 0 {
		m |= 04000
	}
	if fi.Mode()&fs.ModeSetgid != 0 {
		m |= 02000
	}
	if fi.Mode()&fs.ModeSticky != 0 {
		m |= 01000
	}
	return m
}

func describeFileWant(p *FileParams, exists bool) string {
	if !exists {
		return p.Path + " absent"
	}
	parts := []string{p.Path + " exists"}
	if p.Mode != nil {
		parts = append(parts, "mode "+p.Mode.String())
	}
	if p.Owner != "" {
		parts = append(parts, "owner "+p.Owner)
	}
	if p.SizeMax != nil {
		parts = append(parts, "at most "+p.SizeMax.String())
	}
	if p.Content != "" {
		parts = append(parts, "content matching "+p.Content)
	}
	return strings.Join(parts, ", ")
}

// resolveOwner turns "user[:group]" into ids using the host's own
// /etc/passwd and /etc/group: the host may have users the machine does
// not, and the same name may have another id there. gid is -1 when no
// group is given. A user without a group does not imply its login group:
// `chown alice file` leaves the group alone, so neither do we.
func resolveOwner(t Target, host, owner string) (uid, gid int, err error) {
	user, group, hasGroup := strings.Cut(strings.TrimSpace(owner), ":")
	if uid, err = lookupID(t, host, "/etc/passwd", user); err != nil {
		return 0, 0, err
	}
	gid = -1
	if hasGroup && group != "" {
		if gid, err = lookupID(t, host, "/etc/group", group); err != nil {
			return 0, 0, err
		}
	}
	return uid, gid, nil
}

// lookupID finds name in a passwd-format file of the host (name:x:id:...);
// numeric names are ids already.
func lookupID(t Target, host, file, name string) (int, error) {
	if id, err := strconv.Atoi(name); err == nil && id >= 0 {
		return id, nil
	}
	real, err := t.RootPath(host, file)
	if err != nil {
		return 0, err
	}
	f, err := os.Open(real)
	if err != nil {
		return 0, fmt.Errorf("read the host's %s: %w", file, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 3 && fields[0] == name {
			id, err := strconv.Atoi(fields[2])
			if err != nil {
				return 0, fmt.Errorf("the host's %s: bad id for %s: %w", file, name, err)
			}
			return id, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read the host's %s: %w", file, err)
	}
	return 0, fmt.Errorf("%q is not in the host's %s", name, file)
}
