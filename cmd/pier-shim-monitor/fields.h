/* The JSON field names of the protocol's messages and exit.json (the
 * struct tags of package shim/protocol) and the names of the descriptors
 * passed with them. Hand-written: shim/protocol's cConstants table, from
 * which protocol.h is generated, does not have them yet; once it has,
 * these lines move there. A flat list of defines, as protocol.h. */
#define FIELD_V "v"
#define FIELD_OP "op"
#define FIELD_ERROR "error"
#define FIELD_CODE "code"
#define FIELD_PID "pid"
#define FIELD_STATE "state"
#define FIELD_EXIT "exit"
#define FIELD_FDS "fds"
#define FIELD_ATTACH "attach"
#define FIELD_STDIN "stdin"
#define FIELD_STDOUT "stdout"
#define FIELD_STDERR "stderr"
#define FIELD_STATUS "status"
#define FIELD_SHIM_PID "shimPid"
#define FIELD_CREATED_AT "createdAt"
#define FIELD_STARTED_AT "startedAt"
#define FIELD_EXIT_CODE "code"
#define FIELD_SIGNAL "signal"
#define FIELD_OOM_KILLED "oomKilled"
#define FIELD_FINISHED_AT "finishedAt"
#define FD_PTY "pty"
#define FD_STDIN "stdin"
#define FD_STDOUT "stdout"
#define FD_STDERR "stderr"
