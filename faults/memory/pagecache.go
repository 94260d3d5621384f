package memory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/labs"
)

// PageCacheParams are memory.page-cache's `with:` parameters.
type PageCacheParams struct {
	Process string    `yaml:"process,omitempty" json:"process,omitempty" doc:"the service that reads the file over and over (default backup)"`
	Size    labs.Size `yaml:"size,omitempty" json:"size,omitempty" doc:"size of the file it reads (default 80Mi): its pages fill the host's page cache"`
}

// Validate checks the parameters before anything exists.
func (p *PageCacheParams) Validate() error {
	if err := validateService(p.Process, ""); err != nil {
		return err
	}
	if p.Size < 4<<20 || p.Size > 1<<30 {
		return &labs.ParamError{Field: "size", Msg: "must be between 4Mi and 1Gi"}
	}
	return nil
}

// cacheFileDir holds the files the kind reads. The page cache is only
// reclaimable for a file on a disk filesystem: the host's private
// directories are overlays on a tmpfs, whose pages are shmem. So the
// file lives on the machine's disk, named after the instance, recorded in
// the ledger before it exists, and seen by the host through its /var
// overlay's lower layer.
const cacheFileDir = "/var/tmp"

// resCacheFile is the ledger kind of such a file.
const resCacheFile = "memory.cachefile"

func init() {
	faults.RegisterResource(resCacheFile, releaseCacheFile)
	faults.Register(labs.FaultKind{
		Name: "memory.page-cache",
		Doc: "a service reads a large file over and over, so the host's memory cgroup is mostly page cache: " +
			"\"used\" looks high while most of it is reclaimable (memory.stat cache/file vs rss/anon)",
		NewParams: func() any { return &PageCacheParams{Process: "backup", Size: 80 << 20} },
		Facts: []labs.FactSpec{
			{Name: "process", Doc: "the reading service's command name"},
			{Name: "file", Doc: "the file it reads (same path inside the host)"},
			{Name: "cache_mib", Doc: "page cache charged to the host's cgroup when up returned, MiB"},
			{Name: "anon_mib", Doc: "anonymous (process) memory of the host's cgroup when up returned, MiB"},
			{Name: "usage_mib", Doc: "the cgroup's total usage when up returned, MiB"},
		},
	}, pageCacheKind{})
}

type pageCacheKind struct{}

type pageCacheState struct {
	File string `json:"file"`
}

// releaseCacheFile removes a recorded file; already gone is success.
func releaseCacheFile(ctx context.Context, name string, data json.RawMessage) error {
	var st pageCacheState
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("%s record %s: %w", resCacheFile, name, err)
	}
	// Only ever remove what this kind names: a damaged ledger must not
	// turn into deleting an arbitrary file.
	if filepath.Dir(st.File) != cacheFileDir || !strings.HasPrefix(filepath.Base(st.File), "labctl-") {
		return fmt.Errorf("%s record %s: %q is not a file this kind creates", resCacheFile, name, st.File)
	}
	if err := os.Remove(st.File); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (pageCacheKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*PageCacheParams)
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	dir := h.CgroupDir("memory")
	file := filepath.Join(cacheFileDir, "labctl-"+env.InstanceID()+"-"+f.ID+".dump")
	st := pageCacheState{File: file}
	if err := env.Record(resCacheFile, file, st); err != nil {
		return nil, err
	}
	if err := writeUncached(file, int64(p.Size)); err != nil {
		return nil, err
	}
	svc := service{Name: p.Process, Config: "/etc/" + p.Process + ".conf",
		Content: fmt.Sprintf("# %s: verifies the nightly dump by reading it\nread = %s\n", p.Process, file)}
	if _, err := svc.start(ctx, h); err != nil {
		return nil, err
	}
	var anon, cache, usage int64
	err = pollUntil(ctx, 30*time.Second, func() (bool, string, error) {
		var err error
		if anon, cache, err = memoryBreakdown(dir); err != nil {
			return false, "", err
		}
		if usage, err = memoryUsage(dir); err != nil {
			return false, "", err
		}
		return cache >= int64(p.Size)*9/10, fmt.Sprintf("page cache %s MiB of %s", mib(cache), p.Size), nil
	})
	if err != nil {
		return nil, fmt.Errorf("memory.page-cache on %s: %w", f.Host, err)
	}
	state, _ := json.Marshal(st)
	return &faults.Applied{
		Facts: map[string]string{
			"process":   p.Process,
			"file":      file,
			"cache_mib": mib(cache),
			"anon_mib":  mib(anon),
			"usage_mib": mib(usage),
		},
		State: state,
	}, nil
}

// writeUncached writes size bytes to path, then drops its pages from the
// page cache, so that the pages are charged to whoever reads them next
// (the host's cgroup), not to labctl's.
func writeUncached(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("cache file: %w", err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for written := int64(0); written < size; written += int64(len(buf)) {
		if _, err := f.Write(buf[:min(int64(len(buf)), size-written)]); err != nil {
			return fmt.Errorf("cache file: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cache file: %w", err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("cache file: drop its pages: %w", err)
	}
	return nil
}

// Revert removes the file (the ledger record does too; both are idempotent).
func (pageCacheKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	if len(state) == 0 {
		return nil
	}
	return releaseCacheFile(ctx, f.ID, state)
}
