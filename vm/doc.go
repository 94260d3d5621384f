// Package vm will drive the Vagrant VM of the repository's Vagrantfile, so
// the same labs run inside a VM where namespaces are not available or a
// hard boundary is wanted (see DESIGN.md, "VM mode"). It is empty until the
// VM mode lands.
package vm
