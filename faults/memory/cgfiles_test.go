package memory

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/labctl/labctl/labs"
)

// fakeCgroup writes files into a temporary directory that stands for a
// cgroup directory of one layout.
func fakeCgroup(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestV2FilesChosenWhenPresent(t *testing.T) {
	dir := fakeCgroup(t, map[string]string{
		"cgroup.controllers": "cpu memory pids\n",
		"memory.max":         "67108864\n",
		"memory.events":      "low 0\nhigh 0\nmax 12\noom 3\noom_kill 3\noom_group_kill 0\n",
		"memory.current":     "1048576\n",
		"memory.stat":        "anon 4096\nfile 8192\n",
		"cpu.max":            "20000 100000\n",
		"cpu.stat":           "usage_usec 10\nnr_periods 50\nnr_throttled 7\nthrottled_usec 1500\n",
	})
	if got := filesOf(dir); got != v2Files {
		t.Errorf("filesOf = %+v, want the v2 files", got)
	}
	limit, ok, err := memoryLimit(dir)
	if err != nil || !ok || limit != 64<<20 {
		t.Errorf("memoryLimit = %d, %v, %v; want 64Mi, true", limit, ok, err)
	}
	if n, err := oomKills(dir); err != nil || n != 3 {
		t.Errorf("oomKills = %d, %v; want 3 (memory.events)", n, err)
	}
	if n, err := memoryUsage(dir); err != nil || n != 1<<20 {
		t.Errorf("memoryUsage = %d, %v; want 1Mi (memory.current)", n, err)
	}
	if anon, cache, err := memoryBreakdown(dir); err != nil || anon != 4096 || cache != 8192 {
		t.Errorf("memoryBreakdown = %d, %d, %v; want anon 4096, file 8192", anon, cache, err)
	}
	if p, us, err := cpuThrottled(dir); err != nil || p != 7 || us != 1500 {
		t.Errorf("cpuThrottled = %d, %d, %v; want 7, 1500 us", p, us, err)
	}
	if c, ok, err := cpuQuota(dir); err != nil || !ok || c != 0.2 {
		t.Errorf("cpuQuota = %v, %v, %v; want 0.2 cores", c, ok, err)
	}
}

func TestV1FilesWithoutV2Markers(t *testing.T) {
	dir := fakeCgroup(t, map[string]string{
		"memory.limit_in_bytes": "67108864\n",
		"memory.oom_control":    "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n",
		"memory.usage_in_bytes": "2097152\n",
		"memory.stat":           "cache 8192\nrss 4096\ntotal_cache 8192\n",
		"cpu.cfs_quota_us":      "20000\n",
		"cpu.cfs_period_us":     "100000\n",
		"cpu.stat":              "nr_periods 50\nnr_throttled 7\nthrottled_time 1500000\n",
	})
	if got := filesOf(dir); got != v1Files {
		t.Errorf("filesOf = %+v, want the v1 files", got)
	}
	limit, ok, err := memoryLimit(dir)
	if err != nil || !ok || limit != 64<<20 {
		t.Errorf("memoryLimit = %d, %v, %v; want 64Mi, true", limit, ok, err)
	}
	if n, err := oomKills(dir); err != nil || n != 5 {
		t.Errorf("oomKills = %d, %v; want 5 (memory.oom_control)", n, err)
	}
	if n, err := memoryUsage(dir); err != nil || n != 2<<20 {
		t.Errorf("memoryUsage = %d, %v; want 2Mi", n, err)
	}
	if anon, cache, err := memoryBreakdown(dir); err != nil || anon != 4096 || cache != 8192 {
		t.Errorf("memoryBreakdown = %d, %d, %v; want rss 4096, cache 8192", anon, cache, err)
	}
	if p, us, err := cpuThrottled(dir); err != nil || p != 7 || us != 1500 {
		t.Errorf("cpuThrottled = %d, %d, %v; want 7, 1500 us (from ns)", p, us, err)
	}
	if c, ok, err := cpuQuota(dir); err != nil || !ok || c != 0.2 {
		t.Errorf("cpuQuota = %v, %v, %v; want 0.2 cores", c, ok, err)
	}
}

func TestUnlimited(t *testing.T) {
	v1 := fakeCgroup(t, map[string]string{"memory.limit_in_bytes": "9223372036854771712\n", "cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"})
	v2 := fakeCgroup(t, map[string]string{"cgroup.controllers": "", "memory.max": "max\n", "cpu.max": "max 100000\n"})
	for name, dir := range map[string]string{"v1": v1, "v2": v2} {
		if _, ok, err := memoryLimit(dir); ok || err != nil {
			t.Errorf("%s: memoryLimit limited = %v, %v; want unlimited", name, ok, err)
		}
		if _, ok, err := cpuQuota(dir); ok || err != nil {
			t.Errorf("%s: cpuQuota limited = %v, %v; want unlimited", name, ok, err)
		}
	}
}

func TestMissingCounterIsAnError(t *testing.T) {
	// A v1 memory directory on an old kernel has no oom_kill line.
	dir := fakeCgroup(t, map[string]string{"memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n"})
	if _, err := oomKills(dir); err == nil || !strings.Contains(err.Error(), "oom_kill") {
		t.Errorf("oomKills without the counter: err = %v, want one naming oom_kill", err)
	}
}

func TestOOMKillsOfFiltersByCgroup(t *testing.T) {
	klog := strings.Join([]string{
		"[  758.799597] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/labctl/other/app,task_memcg=/labctl/other/app,task=dd,pid=12516,uid=0",
		"[  758.799614] Memory cgroup out of memory: Killed process 12516 (dd) total-vm:207776kB",
		"[  762.612520] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/labctl/abc/app,task_memcg=/labctl/abc/app,task=worker,pid=13053,uid=0",
		"[  762.612530] Memory cgroup out of memory: Killed process 13053 (worker) total-vm:1kB",
		"[  763.000000] oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=x,pid=1,uid=0",
		"[  764.612520] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/labctl/abc/app,task_memcg=/labctl/abc/app,task=worker,pid=13100,uid=0",
	}, "\n")
	got := oomKillsOf(klog, "/sys/fs/cgroup/memory/labctl/abc/app")
	want := []oomKill{{13053, "worker"}, {13100, "worker"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("oomKillsOf (-want +got):\n%s", diff)
	}
}

func TestParseWorkerConfig(t *testing.T) {
	c, err := parseWorkerConfig(strings.NewReader("# comment\nbuffer = 256Mi  # the batch\n\nleak_per_second=2Mi\nleak_max = 1Gi\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (workerConfig{Buffer: 256 << 20, LeakPerSec: 2 << 20, LeakMax: 1 << 30}); c != want {
		t.Errorf("config = %+v, want %+v", c, want)
	}
	c, err = parseWorkerConfig(strings.NewReader("reserve = 8Gi\ncpu_per_second = 400ms\noom_score_adj = 1000\nread = /var/tmp/x.dump\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (workerConfig{Reserve: 8 << 30, CPUPerSecond: labs.Duration(400 * time.Millisecond), OOMScoreAdj: 1000, Read: "/var/tmp/x.dump"}); c != want {
		t.Errorf("config = %+v, want %+v", c, want)
	}
	for _, bad := range []string{"buffer 256Mi\n", "bufer = 1Mi\n", "buffer = lots\n", "oom_score_adj = 2000\n", "cpu_per_second = fast\n"} {
		if _, err := parseWorkerConfig(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("parseWorkerConfig(%q) err = %v, want an error at line 1", bad, err)
		}
	}
}

func TestReleaseCacheFile(t *testing.T) {
	ctx := t.Context()
	// Only files this kind names are ever removed, whatever the ledger says.
	for _, path := range []string{"/etc/passwd", "/var/tmp/other.dump", "/var/tmp/sub/labctl-x.dump"} {
		data, _ := json.Marshal(pageCacheState{File: path})
		if err := releaseCacheFile(ctx, "f", data); err == nil {
			t.Errorf("releaseCacheFile(%s) = nil, want a refusal", path)
		}
	}
	// Already gone is success (teardown and gc may both run it).
	data, _ := json.Marshal(pageCacheState{File: "/var/tmp/labctl-nonexistent-test.dump"})
	if err := releaseCacheFile(ctx, "f", data); err != nil {
		t.Errorf("releaseCacheFile of a missing file = %v, want nil", err)
	}
}
