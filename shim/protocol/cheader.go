package protocol

import (
	"fmt"
	"reflect"
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
	// The JSON names of the messages' and exit.json's fields, from their
	// struct tags.
	{"FIELD_V", field(Request{}, "V")},
	{"FIELD_OP", field(Request{}, "Op")},
	{"FIELD_ERROR", field(Response{}, "Error")},
	{"FIELD_CODE", field(Response{}, "Code")},
	{"FIELD_PID", field(Response{}, "Pid")},
	{"FIELD_STATE", field(Response{}, "State")},
	{"FIELD_EXIT", field(Response{}, "Exit")},
	{"FIELD_FDS", field(Response{}, "Fds")},
	{"FIELD_ATTACH", field(Request{}, "Attach")},
	{"FIELD_STDIN", field(AttachRequest{}, "Stdin")},
	{"FIELD_STDOUT", field(AttachRequest{}, "Stdout")},
	{"FIELD_STDERR", field(AttachRequest{}, "Stderr")},
	{"FIELD_STATUS", field(State{}, "Status")},
	{"FIELD_SHIM_PID", field(State{}, "ShimPid")},
	{"FIELD_CREATED_AT", field(State{}, "CreatedAt")},
	{"FIELD_STARTED_AT", field(State{}, "StartedAt")},
	{"FIELD_EXIT_CODE", field(Exit{}, "Code")},
	{"FIELD_SIGNAL", field(Exit{}, "Signal")},
	{"FIELD_OOM_KILLED", field(Exit{}, "OOMKilled")},
	{"FIELD_FINISHED_AT", field(Exit{}, "FinishedAt")},
	// The names of passed descriptors.
	{"FD_PTY", FdPty},
	{"FD_STDIN", FdStdin},
	{"FD_STDOUT", FdStdout},
	{"FD_STDERR", FdStderr},
}

// field is the JSON name of a struct's field, from its tag.
func field(v any, name string) string {
	f, ok := reflect.TypeOf(v).FieldByName(name)
	if !ok {
		panic("protocol: no field " + name)
	}
	tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if tag == "" {
		panic("protocol: field " + name + " has no JSON name")
	}
	return tag
}

// CHeader is the text of the monitor's protocol.h.
func CHeader() string {
	var b strings.Builder
	b.WriteString("/* Generated from shim/protocol by go generate; DO NOT EDIT. */\n#ifndef PIER_PROTOCOL_H\n#define PIER_PROTOCOL_H\n")
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
	b.WriteString("#endif\n")
	return b.String()
}
