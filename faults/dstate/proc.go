package dstate

// The shared host helpers under the names this package's drivers use.

import "github.com/labctl/labctl/faults/internal/hostproc"

type mountInfo = hostproc.MountInfo

var (
	poll            = hostproc.Poll
	statusField     = hostproc.StatusField
	nsPID           = hostproc.NSPID
	comm            = hostproc.Comm
	startService    = hostproc.StartService
	run             = hostproc.Run
	mountsOf        = hostproc.MountsOf
	containingMount = hostproc.ContainingMount
	requirePrivate  = hostproc.RequirePrivate
)

func validComm(s string) bool {
	if len(s) == 0 || len(s) > 15 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
