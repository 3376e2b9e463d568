package loadgen

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// hostTicks are the machine's CPU times (all cores, all processes) from the
// "cpu" line of /proc/stat (Linux), in clock ticks; zero elsewhere.
type hostTicks struct {
	user, system, idle, iowait, irq, steal uint64
}

func readHostTicks() hostTicks {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return hostTicks{}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return hostTicks{}
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 9 || fields[0] != "cpu" {
		return hostTicks{}
	}
	var v [8]uint64 // user nice system idle iowait irq softirq steal
	for i := range v {
		v[i], _ = strconv.ParseUint(fields[i+1], 10, 64)
	}
	return hostTicks{user: v[0] + v[1], system: v[2], idle: v[3], iowait: v[4], irq: v[5] + v[6], steal: v[7]}
}

// HostCPU is how the machine's cores spent the measured phase, as
// fractions of all their time: this process and everything else (kernel
// threads, other tenants). Idle and iowait are cores with nothing to run;
// iowait, that while a disk write was outstanding (the engine's fsyncs).
type HostCPU struct {
	User   float64 `json:"user"`
	System float64 `json:"system"`
	Idle   float64 `json:"idle"`
	IOWait float64 `json:"iowait"`
	IRQ    float64 `json:"irq"`
	Steal  float64 `json:"steal"`
}

// hostCPU is the split between two readings; nil without both. A counter
// that went backwards counts zero: proc(5) says iowait can decrease, and
// idle does on some tickless kernels.
func hostCPU(a, b hostTicks) *HostCPU {
	if a == (hostTicks{}) || b == (hostTicks{}) {
		return nil
	}
	sub := func(x, y uint64) uint64 {
		if y < x {
			return 0
		}
		return y - x
	}
	d := hostTicks{sub(a.user, b.user), sub(a.system, b.system), sub(a.idle, b.idle), sub(a.iowait, b.iowait), sub(a.irq, b.irq), sub(a.steal, b.steal)}
	total := float64(d.user + d.system + d.idle + d.iowait + d.irq + d.steal)
	if total <= 0 {
		return nil
	}
	f := func(x uint64) float64 { return float64(x) / total }
	return &HostCPU{User: f(d.user), System: f(d.system), Idle: f(d.idle), IOWait: f(d.iowait), IRQ: f(d.irq), Steal: f(d.steal)}
}
