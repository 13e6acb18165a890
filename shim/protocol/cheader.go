package protocol

import (
	"fmt"
	"strings"
)

// CHeaderPath is the C header generated from cConstants, relative to the
// repository's root.
const CHeaderPath = "cmd/pier-shim-monitor/protocol.h"

//go:generate go test -run TestCHeader -update

// cConstants are the names and values the monitor's C code shares with Go:
// the one table both sides are held to (TestCHeader for the header, the
// shim tests for the monitor's answers and files).
var cConstants = []struct {
	name  string
	value any
}{
	{"PROTO_VERSION", Version},
	{"OP_HELLO", OpHello},
	{"OP_STATE", OpState},
	{"OP_STARTED", OpStarted},
	{"OP_WAIT", OpWait},
	{"OP_EXEC", OpExec},
	{"OP_EXEC_STREAM", OpExecStream},
	{"OP_REOPEN_LOG", OpReopenLog},
	{"OP_DELETE", OpDelete},
	{"OP_ATTACH", OpAttach},
	{"CODE_NOT_FOUND", CodeNotFound},
	{"CODE_NOT_RUNNING", CodeNotRunning},
	{"CODE_VERSION", CodeVersion},
	{"FILE_EXIT", ExitFile},
	{"FILE_EXIT_TMP", ExitTmpFile},
	{"MSG_EXITED", MsgExited},
	{"STATUS_CREATED", StatusCreated},
	{"STATUS_RUNNING", StatusRunning},
	{"STATUS_EXITED", StatusExited},
}

// CHeader is the text of the monitor's protocol.h.
func CHeader() string {
	var b strings.Builder
	b.WriteString("/* Generated from shim/protocol by go generate; DO NOT EDIT. */\n")
	for _, c := range cConstants {
		switch v := c.value.(type) {
		case string:
			fmt.Fprintf(&b, "#define %s %q\n", c.name, v)
		case int:
			fmt.Fprintf(&b, "#define %s %d\n", c.name, v)
		default:
			panic(fmt.Sprintf("protocol: constant %s has type %T", c.name, v))
		}
	}
	return b.String()
}
