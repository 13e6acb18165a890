// Command pier-install is the container of pier's DaemonSet: it installs
// pier onto the node it runs on, through the host's root file system
// mounted into the pod, and can switch the node's kubelet to pier and back.
// See package installer.
package main

import (
	"fmt"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Println("pier-install", version)
		return
	}
	fmt.Fprintln(os.Stderr, "pier-install: not built yet")
	os.Exit(2)
}
