package main

import (
	"io"
	"os"
	"testing"
)

// TestVersion: `pierd --version` and `pierd version` print "pierd <version>"
// and start nothing.
func TestVersion(t *testing.T) {
	saved := version
	version = "1.2.3-test"
	t.Cleanup(func() { version = saved })
	for _, args := range [][]string{{"--version"}, {"-version"}, {"version"}, {"--version", "--config", "/nonexistent"}} {
		out, err := stdout(t, func() error { return run(args) })
		if err != nil || out != "pierd 1.2.3-test\n" {
			t.Errorf("pierd %v: %q, %v", args, out, err)
		}
	}
}

// stdout returns what f writes to os.Stdout.
func stdout(t *testing.T, f func() error) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		done <- b
	}()
	ferr := f()
	os.Stdout = saved
	w.Close()
	out := <-done
	r.Close()
	return string(out), ferr
}
