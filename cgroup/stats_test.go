package cgroup

import (
	"testing"
	"time"

	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
)

func TestNanoCores(t *testing.T) {
	t0 := time.Unix(1000, 0)
	cur := Sample{At: t0.Add(2 * time.Second), Usage: 3e9}
	if got := NanoCores(Sample{At: t0, Usage: 1e9}, cur); got == nil || *got != 1e9 {
		t.Errorf("2 s of CPU in 2 s: %v, want 1e9 nanocores", got)
	}
	for _, prev := range []Sample{{}, {At: t0, Usage: 4e9}, {At: cur.At, Usage: 1}} {
		if got := NanoCores(prev, cur); got != nil {
			t.Errorf("after %+v: %d, want none (no sample, a new cgroup, no time)", prev, *got)
		}
	}
}

func TestPressure(t *testing.T) {
	if pressure(nil) != nil || pressure(&v2stats.PSIStats{}) != nil {
		t.Error("no pressure file: want nil")
	}
	p := pressure(&v2stats.PSIStats{Some: &v2stats.PSIData{Avg10: 1.5, Total: 7}, Full: &v2stats.PSIData{Avg300: 2, Total: 3}})
	if p == nil || p.Some.Avg10 != 1.5 || p.Some.TotalMicros != 7 || p.Full.Avg300 != 2 || p.Full.TotalMicros != 3 {
		t.Errorf("pressure: %+v", p)
	}
}
