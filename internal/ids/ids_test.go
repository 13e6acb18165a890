package ids

import (
	"errors"
	"testing"
)

func TestLookup(t *testing.T) {
	m := map[string]int{"abc123": 1, "abd456": 2}
	if v, ok, err := Lookup(m, "abc"); !ok || err != nil || v != 1 {
		t.Fatalf("prefix: %v %v %v", v, ok, err)
	}
	if v, ok, err := Lookup(m, "abd456"); !ok || err != nil || v != 2 {
		t.Fatalf("full id: %v %v %v", v, ok, err)
	}
	if _, _, err := Lookup(m, "ab"); !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("ambiguous: %v", err)
	}
	if _, ok, err := Lookup(m, "zz"); ok || err != nil {
		t.Fatalf("absent: %v %v", ok, err)
	}
	if len(New()) != 64 || New() == New() {
		t.Fatal("New")
	}
}
