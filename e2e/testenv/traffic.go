package testenv

import (
	"net"
)

// SendUDP sends n datagrams of size bytes to the discard port (9) of ip, a
// pod's address, so that the pod's interface counts traffic: nothing needs
// to listen (the pod answers with ICMP, which counts too).
func SendUDP(ip string, n, size int) error {
	conn, err := net.Dial("udp", net.JoinHostPort(ip, "9"))
	if err != nil {
		return err
	}
	defer conn.Close()
	buf := make([]byte, size)
	for range n {
		conn.Write(buf) // a refusal (the ICMP answer) fails the next write: sent anyway
	}
	return nil
}
