package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
)

// confCache holds the network loaded from a configuration directory until
// the directory (a file added, removed or renamed) or the chosen file changes.
type confCache struct {
	mu    sync.Mutex
	valid bool
	key   confKey
	list  *libcni.NetworkConfigList
	err   error
}

type confKey struct {
	dirMod  time.Time
	file    string // chosen file, "" if none
	fileMod time.Time
	size    int64
}

// settle is how old a modification time must be before a result is cached:
// the kernel's coarse timestamps cannot tell apart two writes in one tick.
const settle = 2 * time.Second

func (c *confCache) get(dir string) (*libcni.NetworkConfigList, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, noConfig(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("network config dir: %w", err)
	}
	if c.valid && st.ModTime().Equal(c.key.dirMod) {
		if k, ok := fileKey(c.key.file); ok && k.fileMod.Equal(c.key.fileMod) && k.size == c.key.size {
			return c.list, c.err
		}
	}
	file, list, err := load(dir)
	key, ok := fileKey(file)
	key.dirMod = st.ModTime()
	now := time.Now()
	c.valid = ok && now.Sub(key.dirMod) > settle && now.Sub(key.fileMod) > settle
	c.key, c.list, c.err = key, list, err
	return list, err
}

// fileKey stats file; "" (no file chosen) is a valid, unchanging key.
func fileKey(file string) (confKey, bool) {
	if file == "" {
		return confKey{}, true
	}
	st, err := os.Stat(file)
	if err != nil {
		return confKey{}, false
	}
	return confKey{file: file, fileMod: st.ModTime(), size: st.Size()}, true
}

func noConfig(dir string) error {
	return fmt.Errorf("%w in %s: install one (pier ships deploy/cni/10-pier.conflist)", ErrNoConfig, dir)
}

// load returns the first network configuration in dir in lexical file name
// order over *.conflist, *.conf and *.json, as containerd and CRI-O pick it,
// and the file it came from. A broken first file is an error, not skipped.
func load(dir string) (string, *libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(dir, []string{".conflist", ".conf", ".json"})
	if err != nil {
		return "", nil, fmt.Errorf("network config dir: %w", err)
	}
	if len(files) == 0 {
		return "", nil, noConfig(dir)
	}
	slices.Sort(files)
	list, err := loadFile(files[0])
	return files[0], list, err
}

// loadFile reads a network configuration list (*.conflist) or a single
// plugin configuration (*.conf, *.json), which it wraps into a list of one.
func loadFile(path string) (*libcni.NetworkConfigList, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("network config: %w", err)
	}
	if filepath.Ext(path) != ".conflist" {
		var plugin map[string]any
		if err := json.Unmarshal(data, &plugin); err != nil {
			return nil, fmt.Errorf("network config %s: %w", path, err)
		}
		list := map[string]any{"name": plugin["name"], "cniVersion": plugin["cniVersion"], "plugins": []any{plugin}}
		if data, err = json.Marshal(list); err != nil {
			return nil, fmt.Errorf("network config %s: %w", path, err)
		}
	}
	list, err := libcni.NetworkConfFromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("network config %s: %w", path, err)
	}
	if list.Name == "" || len(list.Plugins) == 0 {
		return nil, fmt.Errorf("network config %s: a network needs a name and plugins", path)
	}
	return list, nil
}
