package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestGrowthVerdict(t *testing.T) {
	pods := []int{10, 50, 100}
	f := func(g func(n float64) float64) []float64 {
		var v []float64
		for _, n := range pods {
			v = append(v, g(float64(n)))
		}
		return v
	}
	for _, tc := range []struct {
		name   string
		values []float64
		noise  []float64
		linear bool
	}{
		{"linear", f(func(n float64) float64 { return 3 * n }), nil, true},
		{"linear with a constant", f(func(n float64) float64 { return 13 + 0.1*n }), nil, true},
		{"flat", f(func(n float64) float64 { return 13 }), nil, true},
		{"falling per pod", []float64{6.8, 19.8, 34.8}, nil, true},
		{"flat with noise", []float64{18.5, 16.6, 19}, nil, true},
		{"n log n", f(func(n float64) float64 { return n * math.Log(n) }), nil, false},
		{"quadratic", f(func(n float64) float64 { return n * n }), nil, false},
		{"quadratic behind a constant", f(func(n float64) float64 { return 13 + 0.005*n*n }), nil, false},
		{"zero then some", []float64{0, 0, 6}, nil, false},
		{"a rise within noise", []float64{0.5, 10.5, 5.2}, []float64{5, 25, 10}, true},
		{"a rise beyond noise", []float64{0.5, 10.5, 5.2}, []float64{1, 2, 1}, false},
	} {
		if ok, why := growthVerdict(pods, tc.values, tc.noise); ok != tc.linear {
			t.Errorf("%s %v: linear %v (%s), want %v", tc.name, tc.values, ok, why, tc.linear)
		}
	}
}

func TestNiceStep(t *testing.T) {
	for in, want := range map[float64]float64{0.3: 0.5, 1: 1, 1.2: 2, 3: 5, 7: 10, 140: 200} {
		if got := niceStep(in); math.Abs(got-want) > 1e-9 {
			t.Errorf("niceStep(%v) = %v, want %v", in, got, want)
		}
	}
}

func TestWriteScalePlot(t *testing.T) {
	var points []scalePoint
	for _, n := range []int{10, 50, 100} {
		p := scalePoint{pods: n, start: time.Duration(n) * 50 * time.Millisecond, remove: time.Duration(n) * 30 * time.Millisecond,
			helpersKB: 100 * n, growthKB: 50 * n, rssKB: 30000 + 60*n, goroutines: 50 + 4*n, latency: map[string][]time.Duration{}}
		for _, name := range scaleLatencies {
			p.latency[name] = []time.Duration{time.Duration(n) * time.Millisecond}
		}
		points = append(points, p)
	}
	path := filepath.Join(t.TempDir(), "d", "scale.svg")
	if err := writeScalePlot(path, "pier", points); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	svg := string(b)
	for _, want := range []string{"<svg", "pierd RSS", "pierd goroutines", "ListPodSandboxStats", "target 100", "</svg>"} {
		if !strings.Contains(svg, want) {
			t.Errorf("the plot has no %q", want)
		}
	}
}
