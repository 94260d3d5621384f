package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/labctl/labctl/vm"
)

// vmForwarded are the commands `--vm` runs inside the VM instead of here.
var vmForwarded = []string{"list", "describe", "up", "shell", "status", "down", "answer", "check", "hint", "solve", "report", "test"}

// addVMCmds adds `labctl vm ...` and the --vm flag of the lab commands.
func (a *app) addVMCmds(root *cobra.Command) {
	root.AddCommand(a.vmCmd())
	for _, c := range root.Commands() {
		for _, name := range vmForwarded {
			if c.Name() == name {
				a.addVMFlag(c)
			}
		}
	}
}

// addVMFlag makes `labctl CMD --vm ...` run `sudo labctl CMD ...` in the
// VM: the same arguments, as argv quoted for the remote shell.
func (a *app) addVMFlag(c *cobra.Command) {
	c.Flags().Bool("vm", false, "run it inside the Vagrant VM (labctl vm up first)")
	local := c.RunE
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if on, _ := cmd.Flags().GetBool("vm"); !on {
			return local(cmd, args)
		}
		if cmd.Flags().Changed("labs") || os.Getenv("LABCTL_LABS") != "" {
			return usageErr("--labs and $LABCTL_LABS name directories of this machine, which the VM does not see; put the labs into labs/ of the repository (embedded in bin/labctl), rebuild, and run labctl vm up --provision")
		}
		return a.vagrantSSH(vm.LabctlArgv(withoutVMFlag(a.args)))
	}
}

// withoutVMFlag drops --vm (in any spelling: --vm, --vm=true, --vm=1...)
// before a "--": everything after "--" is a command for the lab host and
// stays as it is.
func withoutVMFlag(args []string) []string {
	out := make([]string, 0, len(args))
	for i, arg := range args {
		if arg == "--" {
			return append(out, args[i:]...)
		}
		if arg == "--vm" || strings.HasPrefix(arg, "--vm=") {
			continue
		}
		out = append(out, arg)
	}
	return out
}

func (a *app) vmCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vm",
		Short: "The Vagrant VM where labs run when this machine cannot (up, status, ssh, destroy, box)",
		Long: `VM mode runs labctl inside the Debian 12 VM of the repository's Vagrantfile
(systemd PID 1, cgroup v2), driving the vagrant CLI. Then any lab command
takes --vm:

  labctl vm up                 create and provision the VM (bin/labctl is copied in)
  labctl up --vm first-look    start a lab inside it;  labctl shell --vm
  labctl vm destroy            remove the VM

Offline, build the local box first: make box (labctl vm box).`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	var provision bool
	var provider string
	up := &cobra.Command{
		Use:   "up",
		Short: "Create, boot and provision the VM (vagrant up)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			argv := []string{"up"}
			if provider != "" {
				argv = append(argv, "--provider="+provider)
			}
			if provision {
				argv = append(argv, "--provision")
			}
			return a.vagrant(argv...)
		},
	}
	up.Flags().BoolVar(&provision, "provision", false, "provision again (copy a rebuilt bin/labctl in)")
	up.Flags().StringVar(&provider, "provider", "", "libvirt or virtualbox (default: Vagrant's choice, $VAGRANT_DEFAULT_PROVIDER)")
	status := &cobra.Command{
		Use:   "status",
		Short: "Show whether the VM exists and runs (vagrant status)",
		Args:  exactArgs(0),
		RunE:  func(cmd *cobra.Command, args []string) error { return a.vagrant("status") },
	}
	ssh := &cobra.Command{
		Use:   "ssh [-- CMD...]",
		Short: "A shell in the VM, or run CMD there",
		RunE: func(cmd *cobra.Command, args []string) error {
			before, after := splitDash(cmd, args)
			if len(before) > 0 {
				return usageErr("vm ssh: put the command after --, e.g. labctl vm ssh -- sudo labctl status")
			}
			return a.vagrantSSH(after)
		},
	}
	destroy := &cobra.Command{
		Use:   "destroy",
		Short: "Remove the VM and its disk (vagrant destroy -f)",
		Args:  exactArgs(0),
		RunE:  func(cmd *cobra.Command, args []string) error { return a.vagrant("destroy", "-f") },
	}
	var force bool
	box := &cobra.Command{
		Use:   "box",
		Short: "Build the offline box labctl/debian12 from this machine's apt mirror (make box)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := vm.New(a.stdin, a.stdout, a.stderr)
			if err != nil {
				return a.vmError(err)
			}
			ctx, stop := interruptible()
			defer stop()
			return a.vmError(vm.BuildBox(ctx, v, vm.BoxOptions{Force: force, Progress: a.stderr}))
		},
	}
	box.Flags().BoolVar(&force, "force", false, "rebuild even when the cached box is of the current recipe")
	cmd.AddCommand(up, status, ssh, destroy, box)
	return cmd
}

// vagrant runs `vagrant argv...` in the Vagrantfile's directory.
func (a *app) vagrant(argv ...string) error {
	v, err := vm.New(a.stdin, a.stdout, a.stderr)
	if err != nil {
		return a.vmError(err)
	}
	ctx, stop := interruptible()
	defer stop()
	code, err := v.Run(ctx, argv...)
	if err != nil {
		return a.vmError(err)
	}
	if code != 0 {
		return silentExit(exitFail)
	}
	return nil
}

// vagrantSSH runs remote (an argv) in the VM and exits with its code.
func (a *app) vagrantSSH(remote []string) error {
	v, err := vm.New(a.stdin, a.stdout, a.stderr)
	if err != nil {
		return a.vmError(err)
	}
	ctx, stop := interruptible()
	defer stop()
	code, err := v.SSH(ctx, remote, stdinIsTerminal(a.stdin) && isTerminal(a.stdout))
	if err != nil {
		return a.vmError(err)
	}
	if code != 0 {
		return silentExit(code)
	}
	return nil
}

// vmError prints a VM mode failure with what to do; a machine that cannot
// run the VM exits 3 like one that cannot run labs.
func (a *app) vmError(err error) error {
	if err == nil {
		return nil
	}
	var ve *vm.Error
	if !errors.As(err, &ve) {
		return failErr(err)
	}
	fmt.Fprintf(a.stderr, "labctl: %s\n", ve.Msg)
	if ve.Hint != "" {
		fmt.Fprintf(a.stderr, "  what to do: %s\n", ve.Hint)
	}
	if ve.Env {
		return silentExit(exitEnviron)
	}
	return silentExit(exitFail)
}

// stdinIsTerminal: a learner's shell in the VM needs a terminal; a pipe
// (scripts, --json) must get the remote bytes unchanged.
func stdinIsTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && isTerminal(f)
}
