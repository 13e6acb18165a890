package cri

import (
	"google.golang.org/protobuf/proto"
)

// Page bounds for the Stream* list RPCs: a page holds at most pageItems
// items and at most pageBytes of encoded items, well under the 16 MiB a
// CRI client receives in one message, so that a list of any length pages
// through. An item larger than pageBytes goes alone in its page.
const (
	pageItems = 500
	pageBytes = 4 << 20
)

// sendPages sends items in order in pages bounded by pageItems and
// pageBytes, each item in exactly one page, through send (which wraps a
// page in the RPC's response); an empty list sends nothing, and the
// stream's end tells the client there is no more.
func sendPages[T proto.Message](items []T, send func([]T) error) error {
	start, size := 0, 0
	for i, it := range items {
		n := proto.Size(it)
		if i > start && (i-start == pageItems || size+n > pageBytes) {
			if err := send(items[start:i]); err != nil {
				return err
			}
			start, size = i, 0
		}
		size += n
	}
	if start < len(items) {
		return send(items[start:])
	}
	return nil
}
