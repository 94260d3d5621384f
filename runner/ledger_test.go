package runner

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/labctl/labctl/labs"
)

func TestLedgerToleratesTornLastLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger")
	l, err := openLedger(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := l.create("netns", "labctl-abc-app", map[string]string{"path": "/run/netns/x"})
	b, _ := l.create("link", "app/eth0", nil)
	if err := l.update(a, map[string]string{"path": "/run/netns/y"}); err != nil {
		t.Fatal(err)
	}
	if err := l.gone(b); err != nil {
		t.Fatal(err)
	}
	l.close()
	// A crash in the middle of an append leaves half a line.
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"seq":5,"op":"create","kind":"cgr`)
	f.Close()

	l, err = openLedger(path)
	if err != nil {
		t.Fatalf("reopen after a torn line: %v", err)
	}
	c, err := l.create("cgroup", "memory", nil)
	if err != nil {
		t.Fatal(err)
	}
	l.close()
	if c != 5 {
		t.Errorf("seq after the torn line = %d, want 5 (the torn record never counted)", c)
	}
	recs, err := readLedger(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range liveResources(recs) {
		got = append(got, r.Kind+" "+r.Name+" "+string(r.Data))
	}
	want := []string{`netns labctl-abc-app {"path":"/run/netns/y"}`, "cgroup memory "}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("live resources (-want +got):\n%s", d)
	}
}

func TestPlanLinksAddressesAndNames(t *testing.T) {
	lab := threeHostLab()
	lab.Links = append(lab.Links, lab.Links[0])
	lab.Links[2].Subnet = "192.168.7.0/24"
	lab.Links[2].BAddr = "9"
	plans, err := planLinks(lab, 42)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range plans {
		for _, a := range []LinkAddress{p.A, p.B} {
			got = append(got, a.Host+" "+a.IfName+" "+a.CIDR+" to "+a.Peer)
		}
	}
	want := []string{
		"client eth0 10.42.0.1/24 to router",
		"router eth0 10.42.0.2/24 to client",
		"router eth1 10.42.1.1/24 to server",
		"server eth0 10.42.1.2/24 to router",
		"client eth1 192.168.7.1/24 to router",
		"router eth2 192.168.7.9/24 to client",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("plan (-want +got):\n%s", d)
	}
}

func TestPlanLinksRejectsAddressOutsideSubnet(t *testing.T) {
	lab := threeHostLab()
	lab.Links[0].Subnet = "10.1.2.0/24"
	lab.Links[0].AAddr = "10.9.9.9"
	if _, err := planLinks(lab, 1); err == nil {
		t.Fatal("an a_addr outside the subnet was accepted")
	}
}

func TestInvalidLabCreatesNothing(t *testing.T) {
	root := privateStateRoot(t)
	bad := threeHostLab()
	bad.Links[1].B = "nowhere"
	if _, err := Up(t.Context(), bad, UpOptions{}); err == nil {
		t.Fatal("Up accepted a link to a host that does not exist")
	}
	unknown := oneHostLab()
	unknown.Faults = []labs.Fault{{ID: "x", Kind: "no.such.kind", Host: "app"}}
	if _, err := Up(t.Context(), unknown, UpOptions{}); err == nil {
		t.Fatal("Up accepted an unknown fault kind")
	}
	ents, _ := os.ReadDir(root)
	if len(ents) != 0 {
		t.Fatalf("an invalid lab left %d entries in the state root", len(ents))
	}
}

func TestIDsAreBase32(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newID()
		if !validID(id) {
			t.Fatalf("newID() = %q: not 6 lowercase base32 characters", id)
		}
		seen[id] = true
	}
	if len(seen) < 990 {
		t.Fatalf("only %d distinct ids in 1000", len(seen))
	}
}
