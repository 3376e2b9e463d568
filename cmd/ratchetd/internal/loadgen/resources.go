package loadgen

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// usage is what the process has consumed so far; a run reports the
// difference between its start and its end.
type usage struct {
	cpu        time.Duration // user + system (getrusage)
	mallocs    uint64
	totalAlloc uint64
	host       hostTicks
}

func sampleUsage() usage {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return usage{cpu: cpuTime(), mallocs: ms.Mallocs, totalAlloc: ms.TotalAlloc, host: readHostTicks()}
}

// heapInUse is the live heap after a collection: the memory a set of
// sessions holds, without the garbage of creating them.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// procStatus reads one "Name:  N kB" line of /proc/self/status (Linux),
// in bytes; 0 where there is no such file.
func procStatus(name string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+":") {
			continue
		}
		fields := strings.Fields(line[len(name)+1:])
		if len(fields) == 0 {
			return 0
		}
		n, _ := strconv.ParseInt(fields[0], 10, 64)
		return n << 10
	}
	return 0
}

// peakRSS is the largest resident set of the process so far: getrusage's
// maxrss, or VmHWM.
func peakRSS() int64 {
	if n := maxRSS(); n > 0 {
		return n
	}
	return procStatus("VmHWM")
}

// dirSize is the disk space a directory's files take (allocated blocks
// where the platform says, so sparse preallocated files count what they use).
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += allocated(fi)
			}
		}
		return nil
	})
	return n
}
