// Command pier-shim is pier's per-container shim and the init process of
// pods that share one PID namespace. pierd starts it; see package shim.
package main

import (
	"os"

	"github.com/pier-runtime/pier/shim"
)

func main() { shim.Main(os.Args) }
