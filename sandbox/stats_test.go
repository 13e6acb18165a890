package sandbox

import (
	"reflect"
	"testing"
)

func TestParseNetDev(t *testing.T) {
	in := `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0: 1234 10 1 2 0 0 0 0 5678 20 3 4 0 0 0 0
`
	got, err := parseNetDev([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Interface{{Name: "eth0", RxBytes: 1234, RxPackets: 10, RxErrors: 1, RxDrops: 2, TxBytes: 5678, TxPackets: 20, TxErrors: 3, TxDrops: 4}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := parseNetDev([]byte("h\nh\neth0: x 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15\n")); err == nil {
		t.Error("a counter that is no number: no error")
	}
}
