package container

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pier-runtime/pier/cgroup"
	"github.com/pier-runtime/pier/image"
	"github.com/pier-runtime/pier/internal/du"
)

// statsManager is a manager of one exited container "c" with an upper
// directory of n files, a clock the test moves, and a count of the walks
// of writable layers.
func statsManager(t *testing.T, n int) (m *Manager, now *time.Time, walks *int) {
	t.Helper()
	base := t.TempDir()
	images, err := image.New(image.Options{Root: filepath.Join(base, "image")})
	if err != nil {
		t.Fatal(err)
	}
	m, err = New(Options{Root: filepath.Join(base, "root"), State: filepath.Join(base, "state"), SocketDir: filepath.Join(base, "s"),
		Images: images, Cgroups: &cgroup.Node{Driver: cgroup.Systemd}})
	if err != nil {
		t.Fatal(err)
	}
	upper := filepath.Join(m.dir("c"), "upper")
	if err := os.MkdirAll(upper, 0o700); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := os.WriteFile(filepath.Join(upper, fmt.Sprint(i)), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m.containers["c"] = &Container{Version: recordVersion, ID: "c", State: Exited}
	now, walks = new(time.Time), new(int)
	*now = time.Unix(1e9, 0)
	m.clock = func() time.Time { return *now }
	m.walk = func(dir string) (du.Usage, error) {
		*walks++
		return du.Walk(dir)
	}
	return m, now, walks
}

// TestStatsWalkOncePerRefresh: kubelet's polls measure a container's
// writable layer once per LayerRefresh, not at each call; the figure
// follows the layer after the refresh.
func TestStatsWalkOncePerRefresh(t *testing.T) {
	m, now, walks := statsManager(t, 1000)
	for range 10 {
		st, err := m.Stats("c")
		if err != nil {
			t.Fatal(err)
		}
		if st.WritableInodes != 1001 {
			t.Fatalf("%d inodes, want 1001", st.WritableInodes)
		}
		*now = now.Add(LayerRefresh / 20)
	}
	if *walks != 1 {
		t.Errorf("%d walks for 10 calls within %v", *walks, LayerRefresh)
	}
	os.WriteFile(filepath.Join(m.dir("c"), "upper", "new"), []byte("y"), 0o600)
	*now = now.Add(LayerRefresh)
	st, err := m.Stats("c")
	if err != nil {
		t.Fatal(err)
	}
	if st.WritableInodes != 1002 || *walks != 2 {
		t.Errorf("after the refresh interval: %d inodes, %d walks; want 1002, 2", st.WritableInodes, *walks)
	}
}

// TestRemovePrunesStats: what Stats keeps of a container goes with it.
func TestRemovePrunesStats(t *testing.T) {
	m, _, _ := statsManager(t, 1)
	if _, err := m.Stats("c"); err != nil {
		t.Fatal(err)
	}
	m.cpu["c"] = cpuSample{At: time.Now(), Usage: 1} // as for a running container
	if err := m.Remove(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	if len(m.cpu) != 0 || len(m.layers) != 0 {
		t.Errorf("after Remove: %d CPU samples, %d layer usages kept", len(m.cpu), len(m.layers))
	}
}
