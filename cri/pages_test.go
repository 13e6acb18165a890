package cri

import (
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestSendPages(t *testing.T) {
	small := func(n int) []*runtimeapi.Container {
		cs := make([]*runtimeapi.Container, n)
		for i := range cs {
			cs[i] = &runtimeapi.Container{Id: strings.Repeat("a", 64)}
		}
		return cs
	}
	big := &runtimeapi.Container{Id: strings.Repeat("b", pageBytes+1)}
	for _, tc := range []struct {
		name  string
		items []*runtimeapi.Container
		pages []int // page lengths
	}{
		{"empty", nil, nil},
		{"one page", small(3), []int{3}},
		{"by count", small(2*pageItems + 1), []int{pageItems, pageItems, 1}},
		{"by size", append(append(small(2), big), small(1)...), []int{2, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []int
			seen := 0
			err := sendPages(tc.items, func(page []*runtimeapi.Container) error {
				for _, c := range page {
					if c != tc.items[seen] {
						t.Fatalf("item %d out of order", seen)
					}
					seen++
				}
				got = append(got, len(page))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if seen != len(tc.items) || len(got) != len(tc.pages) {
				t.Fatalf("pages %v, want %v", got, tc.pages)
			}
			for i := range got {
				if got[i] != tc.pages[i] {
					t.Fatalf("pages %v, want %v", got, tc.pages)
				}
			}
		})
	}
}
