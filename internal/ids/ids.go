// Package ids makes and finds object IDs: 64 hex digits, which users may
// give as any unique prefix (as crictl prints them shortened).
package ids

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
)

// ErrAmbiguous means a prefix matches more than one ID.
var ErrAmbiguous = errors.New("ID prefix is ambiguous: use more characters")

// New returns a random ID.
func New() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Lookup finds the value whose key is id, or the only key starting with it.
// ok is false when there is none.
func Lookup[T any](m map[string]T, id string) (v T, ok bool, err error) {
	if v, ok := m[id]; ok {
		return v, true, nil
	}
	for key, val := range m {
		if strings.HasPrefix(key, id) {
			if ok {
				var zero T
				return zero, false, ErrAmbiguous
			}
			v, ok = val, true
		}
	}
	return v, ok, nil
}
