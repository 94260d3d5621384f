package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/labctl/labctl/internal/rootfs"
)

// rootfsCmd builds the root filesystem systemd lab hosts boot, ahead of
// the first `up` of such a lab (make rootfs, CI).
func (a *app) rootfsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rootfs",
		Short: "Build (once) the Debian root filesystem that systemd lab hosts boot",
		Long: `Build the root filesystem of systemd lab hosts with debootstrap from this
machine's apt mirror into ` + rootfs.CacheDir + `. It takes a couple of minutes the
first time and is a no-op afterwards; 'labctl up' of a systemd lab builds it too.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.environment(); err != nil {
				return err
			}
			ctx, stop := interruptible()
			defer stop()
			dir, err := rootfs.Ensure(ctx, a.stderr)
			if err != nil {
				return failErr(err)
			}
			fmt.Fprintf(a.stdout, "root filesystem ready: %s\n", dir)
			return nil
		},
	}
}
