package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// The configuration is the built-in defaults, then the main file, then the
// drop-ins of config.d beside it (*.toml, in name order), each merged over
// what came before as containerd and CRI-O do: tables merge key by key, a
// later file's value wins, and an array is replaced as a whole, never
// appended to.

// builtIn is what origin names for a key no file set.
const builtIn = "built-in default"

// dropInFiles lists the *.toml files of dir in name order, leaving out
// hidden files (an editor's) and anything that is not a regular file. A
// missing directory has none.
func dropInFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config drop-ins: %w", err)
	}
	var files []string
	for _, e := range entries { // os.ReadDir sorts by name
		if strings.HasPrefix(e.Name(), ".") || !strings.HasSuffix(e.Name(), ".toml") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		files = append(files, p)
	}
	return files, nil
}

// mergeConfig merges files over the defaults. Each file must be valid on
// its own: TOML, known keys, values of the right types; an error names the
// file and the key.
func mergeConfig(files []string) (*Config, error) {
	tree := map[string]any{}
	if _, err := toml.Decode(defaultConfig, &tree); err != nil {
		return nil, fmt.Errorf("built-in default config: %w", err)
	}
	origin := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		if err := checkFile(f, data); err != nil {
			return nil, err
		}
		var t map[string]any
		if _, err := toml.Decode(string(data), &t); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		mergeTree(tree, t, nil, f, origin)
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(tree); err != nil {
		return nil, fmt.Errorf("merge config: %w", err)
	}
	var c Config
	if _, err := toml.Decode(buf.String(), &c); err != nil {
		return nil, fmt.Errorf("merge config: %w", err)
	}
	c.origin, c.files = origin, files
	return &c, nil
}

// checkFile decodes one file strictly.
func checkFile(file string, data []byte) error {
	var c Config
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if keys := md.Undecoded(); len(keys) > 0 {
		names := make([]string, len(keys))
		for i, k := range keys {
			names[i] = k.String()
		}
		word := "key"
		if len(keys) > 1 {
			word = "keys"
		}
		return fmt.Errorf("%s: unknown %s %s (see `pierd config default`)", file, word, strings.Join(names, ", "))
	}
	for _, k := range md.Keys() {
		if err := checkCase(k, reflect.TypeOf(c)); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
	}
	return nil
}

// checkCase refuses a key that names a field in another case than its own
// ("ROOT", "[Image]"): the TOML decoder takes either, but the merge keeps
// them apart, and which would win is left to chance. Keys of maps (runtime
// handlers, registries) are the user's own.
func checkCase(key toml.Key, t reflect.Type) error {
	for i, name := range key {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		switch t.Kind() {
		case reflect.Map:
			t = t.Elem()
		case reflect.Struct:
			f, ok := fieldNamed(t, name)
			if !ok {
				return fmt.Errorf("unknown key %s: keys are lower case, as in `pierd config default`", key[:i+1])
			}
			t = f.Type
		default:
			return nil
		}
	}
	return nil
}

// fieldNamed is t's field whose TOML name is exactly name.
func fieldNamed(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if f.IsExported() && tag == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// mergeTree merges src over dst: tables key by key, anything else (arrays
// included) replaced. origin records, for each key path set, the file.
func mergeTree(dst, src map[string]any, path toml.Key, file string, origin map[string]string) {
	for k, v := range src {
		p := append(slices.Clone(path), k)
		origin[p.String()] = file
		sv, srcTable := v.(map[string]any)
		dv, dstTable := dst[k].(map[string]any)
		if srcTable && dstTable {
			mergeTree(dv, sv, p, file, origin)
			continue
		}
		if srcTable {
			dv = map[string]any{}
			mergeTree(dv, sv, p, file, origin)
			v = dv
		}
		dst[k] = v
	}
}

// from names the file (or flag) that set key, or its nearest table.
func (c *Config) from(key toml.Key) string {
	for n := len(key); n > 0; n-- {
		if f, ok := c.origin[key[:n].String()]; ok {
			return f
		}
	}
	return builtIn
}

// keyError is an error about key, naming the file that set it.
func (c *Config) keyError(key toml.Key, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %s", c.from(key), key, fmt.Sprintf(format, args...))
}
