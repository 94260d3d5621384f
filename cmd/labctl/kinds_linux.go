package main

// The fault kinds, linked in on Linux only: they are made of Linux
// namespaces, cgroups and syscalls. One line per package.
import (
	_ "github.com/labctl/labctl/faults/dstate"
	_ "github.com/labctl/labctl/faults/fd"
	_ "github.com/labctl/labctl/faults/fs"
	_ "github.com/labctl/labctl/faults/memory"
	_ "github.com/labctl/labctl/faults/net"
	_ "github.com/labctl/labctl/faults/process"
	_ "github.com/labctl/labctl/faults/systemd"
)
