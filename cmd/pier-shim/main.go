// Command pier-shim is pier's per-container shim, and the init process of
// pods that share one PID namespace. pierd starts it; see package
// shim/server.
package main

import (
	"os"

	"github.com/pier-runtime/pier/shim/server"
)

func main() { server.Main(os.Args) }
