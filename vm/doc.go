// Package vm drives the Vagrant VM of the repository's Vagrantfile, so the
// same labs run inside a VM where namespaces are not available (macOS,
// Windows, no root) or a hard boundary is wanted (see DESIGN.md, "VM
// mode"). Everything goes through the vagrant CLI with argv; the one string
// that crosses a shell — the remote command of `vagrant ssh -c` — is built
// by Join, which single-quotes every argument.
//
// box.go builds the offline box (`make box`): debootstrap from this
// machine's apt mirror, a kernel booted directly by libvirt, the tools labs
// need and the systemd hosts' root filesystem baked in.
package vm
