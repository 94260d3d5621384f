package main

// Fault and check kinds register themselves from init; linking a package
// in is what makes its kinds available to lab files. One line per package.
import (
	_ "github.com/labctl/labctl/checks"
	_ "github.com/labctl/labctl/faults/dstate"
	_ "github.com/labctl/labctl/faults/fd"
	_ "github.com/labctl/labctl/faults/fs"
	_ "github.com/labctl/labctl/faults/memory"
	_ "github.com/labctl/labctl/faults/net"
	_ "github.com/labctl/labctl/faults/process"
	_ "github.com/labctl/labctl/faults/systemd"
)
