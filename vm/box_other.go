//go:build !linux

package vm

import (
	"context"
	"io"
)

// BoxOptions tunes BuildBox.
type BoxOptions struct {
	Dir      string
	Force    bool
	Progress io.Writer
}

// BuildBox needs debootstrap and a Linux root: elsewhere use the public box.
func BuildBox(ctx context.Context, v *Vagrant, opt BoxOptions) error {
	return &Error{Env: true, Msg: "the offline box is built on Linux (debootstrap, mkfs.ext4)",
		Hint: "use the public Debian box: labctl vm up downloads it"}
}
