// Command pier-shim is pier's per-container shim, and the init process of
// pods that share one PID namespace. pierd starts it; see package
// shim/server.
package main

import (
	"fmt"
	"os"

	"github.com/pier-runtime/pier/shim/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--version" {
		fmt.Println("pier-shim", version)
		return
	}
	server.Main(os.Args)
}
