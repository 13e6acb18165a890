/*
 * pier-shim-monitor is the long-lived part of pier-shim, one per container.
 *
 * pier-shim (Go) runs the OCI runtime's create and answers pierd's
 * handshake, then execs this program in its place: same pid, same session,
 * same child-subreaper flag, and the descriptors it made (the control
 * socket's listener, the container's output pipes or pty master, its stdin
 * pipe, the CRI log). From then on this program is the container's shim: it
 * reaps the container's init, copies its output to the CRI log and to
 * attachers, writes exit.json, and serves the control protocol of package
 * shim (version 1, see shim/protocol; the names and values both sides agree
 * on are in protocol.h, generated from that package).
 *
 * It supervises only: it runs no OCI runtime command. Go owns them all:
 * pierd runs the runtime's start, kill, delete and state, and tells the
 * monitor "started" once the start has succeeded; an exec or exec-stream
 * request is handed, connection and all, to a one-shot "pier-shim exec"
 * (Go), which runs the runtime's exec. A "delete" kills the container's
 * init (SIGKILL: the monitor's unreaped child, so the pid is safe), waits
 * for its exit to be recorded, and ends the monitor; pierd runs the
 * runtime's kill --all before it and the runtime's delete after it.
 *
 * It is C, not Go, because one runs per container for the container's
 * whole life: a Go process idles at about 1.5 MiB of proportional set size,
 * this one at about 0.2 MiB. It is single-threaded: one epoll loop, and
 * no call in it waits for another process (but for an answer to a client
 * whose socket buffer is full: at most 10 s).
 *
 * It is also the init process of pods whose containers share one PID
 * namespace (proc.StartPodInit): PID 1 of that namespace, reaping orphans.
 *
 * SIGTERM (systemd's at shutdown, or an operator's) kills the container,
 * records its exit and ends the monitor (a pod init: ends it, and with it
 * its PID namespace), as containerd's shim and pause end on SIGTERM: a
 * process that outlives SIGTERM holds up every node shutdown for the
 * stop timeout. pierd stops only itself (KillMode=process), never them.
 *
 * Usage (by pier-shim and pierd only):
 *   pier-shim-monitor monitor key=value...
 *     (log=<path> is the container's log, log-dir= and log-name= where it
 *     is opened from; a monitor given log= alone opens it beneath its own
 *     directory. runtime-name=, runtime=, runtime-root= and
 *     runtime-systemd-cgroup=, which older pier-shims pass, are ignored.)
 *   pier-shim-monitor pod-init <pod id>
 *
 * The files:
 *   main.c      the command line, start-up and the event loop
 *   control.c   the control socket: connections, requests, answers
 *   output.c    the container's output: CRI log writer, attach tee
 *   exit.c      reaping the init, OOM kills, exit.json
 *   podinit.c   the pod init
 *   util.c      time, the shim's log, JSON answers, descriptors
 *   request.c   the request parser (jsmn); split.c the log line splitter
 */
#ifndef PIER_MONITOR_H
#define PIER_MONITOR_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <time.h>

#include "protocol.h"
#include "request.h"
#include "split.h"

#define REQ_MAX (64 << 10) /* the longest request the monitor reads itself */
#define REQ_PEEK 4096      /* peeked first: a longer one gets a buffer of REQ_MAX for its time */
#define MAX_FDS 4          /* descriptors passed with one message, at most */
#define ANSWER_MAX 8192    /* the longest answer */
#define LOG_DRAIN_MS 2000  /* how long an exit waits for the output's end */
#ifndef DELETE_WAIT_MS
#define DELETE_WAIT_MS 10000 /* how long a delete waits for the exit after SIGKILL */
#endif
#define REQUEST_WAIT_MS 10000 /* for a connection's request to arrive */
#define ACCEPT_PAUSE_MS 100   /* out of descriptors: accept again after */
#define PATH_BUF 4096

enum status { ST_CREATED, ST_RUNNING, ST_EXITED };

enum conn_state { C_READ, C_WAIT, C_ATTACH, C_DELETE };

/* A client's connection to the control socket. */
struct conn {
	int fd;
	enum conn_state state;
	/* dropped: closed, and freed once the current events are handled;
	 * kept: never freed (its descriptor could not be taken off epoll) */
	int dead, kept;
	struct conn *next;
	/* C_ATTACH: write ends of the attacher's output pipes, -1 when none */
	int out[2];
	int gave_stdin;
	/* C_READ: when to give up on the request; C_DELETE: on the exit */
	struct timespec deadline;
};

/* An output stream of the container: the stdout and stderr pipes, or the
 * pty master as stdout. */
struct output {
	struct monitor *m;
	int fd; /* -1 when there is none, or once it has ended */
	const char *name;
	struct splitter split; /* its buffer: monitor.out_buf[i] */
};

/* epoll tags: a descriptor's kind; connections have their pointer. */
enum { T_SIG = 1, T_LISTEN, T_OUT0, T_OUT1, T_OOM };

/* The monitor's whole state: one, made by main. */
struct monitor {
	/* The configuration, from the command line. */
	const char *id, *dir, *sock_path, *log_path, *oom_file, *helper;
	/* The log, log_path, is opened as log_name beneath log_dir (open_log). */
	const char *log_dir, *log_name;
	int init_pid, tty, stdin_once, pty_stdin;
	long oom_base;
	struct timespec created_at;

	/* Descriptors. */
	int ep, sigfd, listen_fd, log_fd, stdin_fd;
	int pty_fd; /* tty: the master, also outs[0].fd */
	/* inotify on oom_file: oom_seen is the OOM kill count last read while
	 * the container ran (with the systemd driver, systemd removes the
	 * container's scope, memory.events and all, as soon as its last
	 * process is gone, often before the init is reaped) */
	int oom_watch;
	long oom_seen;
	struct output outs[2];
	int log_failing; /* writing the log fails: told once */

	enum status status;
	struct timespec started_at; /* 0: not started */
	int deleted, quit;
	/* terminating: SIGTERM came (the node shuts down, or pier's unit is
	 * killed): the container is killed, and the monitor exits once its
	 * exit is recorded, so that a shutdown never waits on it. */
	int terminating;
	int accept_paused; /* out of descriptors: the listener is off until accept_at */
	int accept_told;   /* that was logged */
	struct timespec accept_at;

	/* The init's end: reaped, then (once the output has ended or after
	 * LOG_DRAIN_MS) recorded in exit.json and status exited. */
	int init_reaped, exit_code, exit_signal, oom_killed;
	struct timespec finished_at, drain_deadline;

	struct conn *conns;
	struct rlimit nofile_inherited; /* the limit the monitor started with */
	int nofile_raised;

	/* The buffers last, apart from the fields above: their pages are
	 * resident only once used. */
	char req[REQ_PEEK + 1];           /* a request, peeked */
	char out_buf[2][SPLIT_CAP];       /* the outputs' lines */
	char log_dir_buf[PATH_BUF];       /* log_dir, from log= alone */
};

/* ---- util.c ---- */

struct timespec now(void);
struct timespec after(long ms);
long ms_until(struct timespec t);
size_t fmt_time(char *b, struct timespec t);
void shimlog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int set_flags(int fd, int nonblock);
int write_all(int fd, const void *p, size_t n);
int close_from(int lowfd);
long read_small_file(const char *path, char *buf, size_t size);
const char *status_name(enum status st);
int ep_ctl(struct monitor *m, int op, int fd, uint32_t events, uint64_t data, const char *what);

/* An answer or record being built, in a fixed buffer: what does not fit
 * sets failed, and a failed buffer is never written. */
struct buf {
	char *p;
	size_t n, cap;
	int failed;
	int comma; /* a value was written at this level: the next needs a comma */
};
#define BUF(arr) {(arr), 0, sizeof(arr), 0, 0}

void bput(struct buf *b, const char *s, size_t n);
void jopen(struct buf *b);
void jclose(struct buf *b);
void jkey(struct buf *b, const char *key);
void jint(struct buf *b, const char *key, long v);
void jstr(struct buf *b, const char *key, const char *s);
void jtrue(struct buf *b, const char *key);
void jtime(struct buf *b, const char *key, struct timespec t);
void jarr_open(struct buf *b, const char *key);
void jarr_str(struct buf *b, const char *s);
void jarr_close(struct buf *b);

/* ---- output.c ---- */

int open_log(struct monitor *m);
int reopen_log(struct monitor *m);
void read_output(struct monitor *m, int i);
void flush_outputs(struct monitor *m);

/* ---- exit.c ---- */

void reap(struct monitor *m);
void note_oom_kills(struct monitor *m);
void bexit(struct monitor *m, struct buf *b, int with_version);
void finish_exit(struct monitor *m);

/* ---- control.c ---- */

int send_msg(int fd, struct buf *b, const int *fds, int nfds);
void answer_ok(int fd);
void answer_err(int fd, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void on_accept(struct monitor *m);
void on_conn(struct monitor *m, struct conn *c, uint32_t events);
void drop_conn(struct monitor *m, struct conn *c);
void sweep_conns(struct monitor *m);
void conns_exited(struct monitor *m);
void conns_tick(struct monitor *m);
long conns_timeout(struct monitor *m);

/* ---- podinit.c ---- */

void pod_init(void) __attribute__((noreturn));

#endif
