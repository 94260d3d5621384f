//go:build linux

package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteAccounts: lab users and groups land in the upper copies of the
// account files, after the machine's lines, with the machine files' modes;
// the machine's files are not touched.
func TestWriteAccounts(t *testing.T) {
	requireRoot(t) // copies root-owned modes and owners
	before := map[string][]byte{}
	for _, f := range accountFiles {
		before[f], _ = os.ReadFile(filepath.Join("/etc", f))
	}
	ov := overlay{Target: "/etc", Upper: t.TempDir()}
	spec := Spec{
		Groups: []Group{{Name: "labops", GID: 43100}},
		Users: []User{
			{Name: "labsvc", UID: 43101, Group: "labops"},
			{Name: "labalice", UID: 43102, Groups: []string{"labops"}, Shell: "/bin/sh"},
		},
	}
	if err := writeAccounts(ov, spec); err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(ov.Upper, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	passwd, group, shadow := read("passwd"), read("group"), read("shadow")
	for _, want := range []string{
		"\nlabsvc:x:43101:43100:labsvc lab user:/home/labsvc:/bin/bash\n",
		"\nlabalice:x:43102:43102:labalice lab user:/home/labalice:/bin/sh\n",
	} {
		if !strings.Contains(passwd, want) {
			t.Errorf("passwd lacks %q", want)
		}
	}
	for _, want := range []string{"\nlabops:x:43100:labalice\n", "\nlabalice:x:43102:\n"} {
		if !strings.Contains(group, want) {
			t.Errorf("group lacks %q:\n%s", want, group)
		}
	}
	if !strings.HasPrefix(passwd, string(before["passwd"])) || !strings.HasPrefix(shadow, string(before["shadow"])) {
		t.Error("the machine's lines are not kept first")
	}
	if !strings.Contains(shadow, "\nlabsvc:!:") {
		t.Errorf("shadow has no locked entry for labsvc")
	}
	m, _ := os.Stat("/etc/shadow")
	u, _ := os.Stat(filepath.Join(ov.Upper, "shadow"))
	if m.Mode() != u.Mode() {
		t.Errorf("shadow copy mode %v, machine's %v", u.Mode(), m.Mode())
	}
	for _, f := range accountFiles {
		if now, _ := os.ReadFile(filepath.Join("/etc", f)); string(now) != string(before[f]) {
			t.Errorf("/etc/%s changed", f)
		}
	}
}

// TestWriteAccountsRefusesMachineClash: a lab account may not shadow a
// machine account, by name or by id; nothing is written.
func TestWriteAccountsRefusesMachineClash(t *testing.T) {
	requireRoot(t)
	for _, spec := range []Spec{
		{Users: []User{{Name: "root", UID: 43001}}},
		{Users: []User{{Name: "labx", UID: 65534}}},   // nobody's uid
		{Groups: []Group{{Name: "labg", GID: 65534}}}, // nogroup's gid
		{Users: []User{{Name: "laby", UID: 43002, Group: "nosuch"}}},
	} {
		ov := overlay{Target: "/etc", Upper: t.TempDir()}
		if err := writeAccounts(ov, spec); err == nil {
			t.Errorf("%+v: accepted", spec)
		}
		if ents, _ := os.ReadDir(ov.Upper); len(ents) != 0 {
			t.Errorf("%+v: wrote %d files", spec, len(ents))
		}
	}
}
