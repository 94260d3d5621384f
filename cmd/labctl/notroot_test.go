package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// copyFile copies the test binary (which doubles as labctl) to dst.
func copyFile(t *testing.T, dst string) {
	t.Helper()
	if err := copySelf(dst); err != nil {
		t.Fatal(err)
	}
}

func copySelf(dst string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	in, err := os.Open(self)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// nobodyBin is the script command `nobodybin`: it puts a copy of labctl
// where an unprivileged user can run it (the test's own temp dirs are
// private to root) and names it in $NOBODY_LABCTL.
func nobodyBin(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: nobodybin")
	}
	dir, err := os.MkdirTemp("/var/tmp", "labctl-notroot-")
	ts.Check(err)
	ts.Defer(func() { os.RemoveAll(dir) })
	ts.Check(os.Chmod(dir, 0o755))
	bin := filepath.Join(dir, "labctl")
	ts.Check(copySelf(bin))
	ts.Setenv("NOBODY_LABCTL", bin)
}
