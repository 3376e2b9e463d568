//go:build !unix

package actors

import "time"

// processCPU is not measured here: CommitDelay never engages.
func processCPU() (time.Duration, bool) { return 0, false }
