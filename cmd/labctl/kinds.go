package main

// Fault and check kinds register themselves from init; linking a package
// in is what makes its kinds available to lab files. One line per package.
// The fault packages are Linux-only (kinds_linux.go): off Linux labctl is a
// VM-mode client (labctl vm ..., --vm) and breaks nothing locally.
import (
	_ "github.com/labctl/labctl/checks"
)
