package cri

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pier-runtime/pier/cgroup"
)

// TestMetricDescriptors: each family is described once, with help and
// label keys.
func TestMetricDescriptors(t *testing.T) {
	resp, err := (&RuntimeService{}).ListMetricDescriptors(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, d := range resp.Descriptors {
		if seen[d.Name] || d.Help == "" || len(d.LabelKeys) < len(metricLabels) {
			t.Errorf("descriptor %v: twice, or without help or label keys", d)
		}
		seen[d.Name] = true
	}
	if len(seen) != len(families) {
		t.Errorf("%d descriptors of %d families", len(seen), len(families))
	}
}

func TestInParallel(t *testing.T) {
	in := []int{1, 2, 3, 4, 5, 6, 7, 8}
	got, err := inParallel(in, func(i int) (*int, error) {
		if i%3 == 0 {
			return nil, nil // gone meanwhile
		}
		return &i, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var vals []int
	for _, p := range got {
		vals = append(vals, *p)
	}
	if want := []int{1, 2, 4, 5, 7, 8}; len(vals) != len(want) || vals[2] != 4 || vals[5] != 8 {
		t.Errorf("inParallel: %v, want %v in order", vals, want)
	}
	boom := errors.New("boom")
	if _, err := inParallel(in, func(i int) (*int, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("an item's error: %v", err)
	}
}

func TestPodSamples(t *testing.T) {
	var p podSamples
	a := cgroup.Sample{At: time.Unix(1, 0), Usage: 1}
	if prev := p.swap("a", a); !prev.At.IsZero() {
		t.Errorf("first sample: previous %v", prev)
	}
	p.swap("b", a)
	if prev := p.swap("a", cgroup.Sample{At: time.Unix(2, 0)}); prev != a {
		t.Errorf("second sample: previous %v, want %v", prev, a)
	}
	p.drop("a")
	p.keep(map[string]bool{"c": true})
	if len(p.m) != 0 {
		t.Errorf("after drop and keep: %v left", p.m)
	}
}
