//go:build linux

package sandbox

import (
	"context"
	"os"
	"testing"

	"github.com/labctl/labctl/internal/reexec"
)

func TestZZDebug(t *testing.T) {
	requireRoot(t)
	h, _ := startHost(t, testSpec(t))
	params := tempFileWith(t, `{"token":"x"}`)
	cmd := CommandWith(context.Background(), h, CommandSpec{
		Path:       reexec.Self(),
		Argv:       []string{"worker", "--config", "/etc/worker.conf"},
		Env:        []string{reexec.EnvHelper + "=" + helperTestWorker},
		ExtraFiles: []*os.File{params},
		Service:    true,
	})
	cmd.Stderr = os.Stderr
	cmd.Stdout = os.Stderr
	err := cmd.Run()
	t.Logf("run: %v", err)
	out, _ := Command(context.Background(), h, nil, "ps", "-e", "-o", "pid=,ppid=,stat=,comm=,args=").CombinedOutput()
	t.Logf("%s", out)
}
