package fuzz

import (
	"encoding/binary"
	"strings"
)

// input decodes a fuzz input into the values a CRI call is built from. It
// never fails: past the end of the data every value is zero, so that
// every input is some sequence of calls.
type input struct{ data []byte }

func (in *input) done() bool { return len(in.data) == 0 }

func (in *input) byte() byte {
	if len(in.data) == 0 {
		return 0
	}
	b := in.data[0]
	in.data = in.data[1:]
	return b
}

func (in *input) bool() bool { return in.byte()&1 == 1 }

// n is a number in [0, max).
func (in *input) n(max int) int { return int(in.byte()) % max }

func (in *input) uint32() uint32 {
	var b [4]byte
	for i := range b {
		b[i] = in.byte()
	}
	return binary.LittleEndian.Uint32(b[:])
}

func (in *input) int64() int64 {
	var b [8]byte
	for i := range b {
		b[i] = in.byte()
	}
	return int64(binary.LittleEndian.Uint64(b[:]))
}

// string is a length-prefixed string (up to 255 bytes), made valid UTF-8:
// protobuf refuses anything else before it leaves the client.
func (in *input) string() string {
	n := int(in.byte())
	if n > len(in.data) {
		n = len(in.data)
	}
	s := string(in.data[:n])
	in.data = in.data[n:]
	return strings.ToValidUTF8(s, "?")
}

// strings is up to max strings.
func (in *input) strings(max int) []string {
	n := in.n(max + 1)
	if n == 0 {
		return nil
	}
	out := make([]string, n)
	for i := range out {
		out[i] = in.string()
	}
	return out
}

// stringMap is up to max entries.
func (in *input) stringMap(max int) map[string]string {
	n := in.n(max + 1)
	if n == 0 {
		return nil
	}
	m := make(map[string]string, n)
	for range n {
		m[in.string()] = in.string()
	}
	return m
}

// name is a short string of the characters a file name may hold, never
// "/": used where pierd writes on the host (log paths), so that even a
// pierd that failed to check could not write outside the test's directory.
func (in *input) name() string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '_'
		}
		return r
	}, in.string())
}

// pick is one of choices, or the fuzzed string when the byte says so.
func (in *input) pick(choices ...string) string {
	i := in.n(len(choices) + 1)
	if i == len(choices) {
		return in.string()
	}
	return choices[i]
}

// take is the next n bytes (fewer at the end).
func (in *input) take(n int) []byte {
	n = min(n, len(in.data))
	b := in.data[:n]
	in.data = in.data[n:]
	return b
}
