package sandbox

// Mount is a lab-local filesystem mounted inside one host only: a
// size-limited tmpfs, or an ext4 image file in the host's state dir on a
// loop device (for "disk full" and "out of inodes" labs).
type Mount struct {
	Path    string   // absolute path inside the host; created (mkdir -p) in its private view
	Type    string   // "tmpfs" | "ext4"
	Size    int64    // bytes, > 0
	Inodes  int64    // ext4 only, 0 = mkfs default
	Options []string // e.g. "ro", "noexec", "nosuid", "nodev"; others go to the filesystem as data
}

// Resource kinds of lab-local filesystems (see AddMount).
const (
	KindImage = "image" // an ext4 image file in a state dir
	KindLoop  = "loop"  // the loop device that backs an image
)
