package container

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/pier-runtime/pier/image"
	"github.com/pier-runtime/pier/internal/atomicfile"
)

// TestReconnectConcurrently: at start-up, pierd reconnects to several
// shims at once, so that monitors that hang cost it N/reconnectParallel
// connection timeouts, not N.
func TestReconnectConcurrently(t *testing.T) {
	base := t.TempDir()
	opts := Options{Root: filepath.Join(base, "root"), State: filepath.Join(base, "state"), SocketDir: filepath.Join(base, "s")}
	images, err := image.New(image.Options{Root: filepath.Join(base, "image")})
	if err != nil {
		t.Fatal(err)
	}
	opts.Images = images
	// Containers whose monitors accept connections and answer nothing.
	var mu sync.Mutex
	open, most := 0, 0
	for i := range reconnectParallel {
		id := fmt.Sprintf("hung%d", i)
		c := &Container{Version: recordVersion, ID: id, State: Running, Config: []byte("{}"),
			Socket: filepath.Join(opts.SocketDir, id+".sock")}
		for _, d := range []string{filepath.Join(opts.Root, id), filepath.Join(opts.State, id), opts.SocketDir} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		if err := atomicfile.WriteJSON(filepath.Join(opts.Root, id, "container.json"), c); err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("unix", c.Socket)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				open++
				most = max(most, open)
				mu.Unlock()
				go func() {
					io.Copy(io.Discard, conn) // until pierd gives up
					conn.Close()
					mu.Lock()
					open--
					mu.Unlock()
				}()
			}
		}()
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d hung shims: at most %d connections at once", reconnectParallel, most)
	if most < 2 {
		t.Errorf("at most %d connection at once: the reconnects ran one after another", most)
	}
	for _, c := range m.List(Filter{}) {
		if c.State != Unknown {
			t.Errorf("container %s of a hung shim is %s", c.ID, c.State)
		}
	}
}
