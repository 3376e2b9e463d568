//go:build !unix

package loadgen

import (
	"os"
	"time"
)

// cpuTime is unknown without getrusage.
func cpuTime() time.Duration { return 0 }

func maxRSS() int64 { return 0 }

func allocated(fi os.FileInfo) int64 { return fi.Size() }
