package loadgen

import (
	"math"
	"runtime"
	"testing"
)

func TestHostCPU(t *testing.T) {
	a := hostTicks{user: 100, system: 10, idle: 50, iowait: 5, irq: 1, steal: 0}
	b := hostTicks{user: 180, system: 16, idle: 56, iowait: 11, irq: 3, steal: 0}
	h := hostCPU(a, b)
	if h == nil {
		t.Fatal("no split for two readings")
	}
	sum := h.User + h.System + h.Idle + h.IOWait + h.IRQ + h.Steal
	if math.Abs(sum-1) > 1e-9 || math.Abs(h.User-0.8) > 1e-9 || math.Abs(h.IOWait-0.06) > 1e-9 {
		t.Fatalf("split %+v (sum %v), want user 0.8, iowait 0.06", h, sum)
	}
	if hostCPU(a, a) != nil || hostCPU(hostTicks{}, b) != nil || hostCPU(a, hostTicks{}) != nil {
		t.Fatal("a split without two readings or elapsed ticks")
	}
	// iowait may go backwards (proc(5)): it counts zero, not 2^64.
	back := b
	back.iowait = a.iowait - 1
	if h := hostCPU(a, back); h == nil || h.IOWait != 0 || h.User > 1 {
		t.Fatalf("a counter that went backwards gave %+v", h)
	}
	if runtime.GOOS == "linux" {
		x := readHostTicks()
		if x.user+x.idle == 0 {
			t.Fatal("/proc/stat read as all zero")
		}
	}
}
