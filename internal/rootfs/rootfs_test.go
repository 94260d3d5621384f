package rootfs

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestFromOneLine(t *testing.T) {
	text := `# comment
deb http://security.debian.org/debian-security bookworm-security main
deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib
deb http://other.example/debian bookworm main
`
	if got := fromOneLine(text, "bookworm"); got != "http://mirror.example/debian" {
		t.Errorf("fromOneLine = %q, want the first bookworm source", got)
	}
	if got := fromOneLine(text, "trixie"); got != "" {
		t.Errorf("fromOneLine(trixie) = %q, want none", got)
	}
}

func TestFromDeb822(t *testing.T) {
	text := `Types: deb
URIs: http://deb.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb
URIs: http://deb.example/debian
Suites: bookworm bookworm-updates
Components: main
`
	if got := fromDeb822(text, "bookworm"); got != "http://deb.example/debian" {
		t.Errorf("fromDeb822 = %q, want the binary bookworm stanza", got)
	}
}

// TestEnsure builds the root filesystem when it is missing (1 to 2½
// minutes, once per machine) and checks what hosts rely on being in it.
func TestEnsure(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("building the root filesystem needs root (debootstrap)")
	}
	start := time.Now()
	built := !Ready()
	dir, err := Ensure(context.Background(), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if built {
		t.Logf("first build took %s", time.Since(start).Round(time.Second))
	}
	for _, p := range []string{"lib/systemd/systemd", "usr/bin/systemctl", "usr/bin/journalctl", "usr/bin/dbus-daemon", "usr/bin/ps", completeMarker} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("root filesystem lacks %s: %v", p, err)
		}
	}
	if data, err := os.ReadFile(filepath.Join(dir, "etc/machine-id")); err != nil || len(data) != 0 {
		t.Errorf("etc/machine-id = %q, %v; want empty so each boot gets its own", data, err)
	}
}
