package image

import (
	"context"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// BenchmarkPullBig pulls e2e/bench's image (testenv.Big: busybox and four
// 50 MiB layers of incompressible data, gzip) from a loopback registry
// into a cold store, as `go run ./e2e/bench -only pull` does through
// pierd. Profile it with -cpuprofile.
func BenchmarkPullBig(b *testing.B) {
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	defer klog.LogToStderr(true)
	img, err := testenv.Big(testenv.BigCacheDir)
	if err != nil {
		b.Fatal(err)
	}
	reg, err := testenv.StartRegistry(testenv.RegistryOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	if _, err := reg.Push("bench/big:1", img); err != nil {
		b.Fatal(err)
	}
	ref := reg.Ref("bench/big:1")
	want := nodeWide(b)
	b.SetBytes(211 << 20)
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		root, err := os.MkdirTemp("", "pier-image-bench-")
		if err != nil {
			b.Fatal(err)
		}
		s, err := New(Options{Root: root})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		before := cpuTime()
		if _, err := s.Pull(context.Background(), ref, nil, want); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - before
		b.StopTimer()
		os.RemoveAll(root)
		b.StartTimer()
	}
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
}

// cpuTime is the user and system time this process has used, the
// registry's included.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
