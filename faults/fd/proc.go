package fd

// The shared host helpers under the names this package's drivers use.

import "github.com/labctl/labctl/faults/internal/hostproc"

var (
	poll           = hostproc.Poll
	nsPID          = hostproc.NSPID
	comm           = hostproc.Comm
	startService   = hostproc.StartService
	run            = hostproc.Run
	requirePrivate = hostproc.RequirePrivate
	openInHost     = hostproc.OpenInHost
)
