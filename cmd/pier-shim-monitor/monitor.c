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
 * shim (version 1, see shim/shim.go). It runs the runtime's start, kill and
 * delete itself; an exec or exec-stream request is handed, connection and
 * all, to a one-shot "pier-shim exec" (Go), which runs the runtime's exec.
 *
 * It is C, not Go, because one runs per container for the container's
 * whole life: a Go process idles at about 1.5 MiB of proportional set size,
 * this one at about 0.1 MiB. It is single-threaded: one epoll loop.
 *
 * It is also the init process of pods whose containers share one PID
 * namespace (shim.StartPodInit): PID 1 of that namespace, reaping orphans.
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
 *     directory)
 *   pier-shim-monitor pod-init <pod id>
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <linux/capability.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <poll.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define PROTO 1
#define MAX_LINE (16 << 10)           /* longest CRI log entry content */
#define OUT_CAP (MAX_LINE + (4 << 10)) /* an output's line buffer */
#define REQ_MAX (64 << 10)            /* a request this program reads itself */
#define MAX_FDS 4
#define RUNTIME_TIMEOUT_MS 60000
#define LOG_DRAIN_MS 2000 /* how long an exit waits for the output's end */
#define DELETE_WAIT_MS 10000
#define REQUEST_WAIT_MS 10000 /* for a connection's request to arrive */
#define ACCEPT_PAUSE_MS 100   /* out of descriptors: accept again after */

/* Status values of State. */
static const char *const st_created = "created", *const st_running = "running", *const st_exited = "exited";

/* The configuration, from the command line. */
static const char *id, *dir, *sock_path, *log_path, *oom_file, *helper, *rt_name, *rt_bin, *rt_root;
/* The log, log_path, is opened as log_name beneath log_dir (open_log). */
static const char *log_dir, *log_name;
static int rt_systemd_cgroup; /* the runtime's --systemd-cgroup, as package oci passes it */
static int init_pid, tty, stdin_once, pty_stdin;
static long oom_base = -1;
/* oom_seen is the OOM kill count last read while the container ran: with
 * the systemd driver, systemd removes the container's scope, memory.events
 * and all, as soon as its last process is gone, often before the init is
 * reaped. oom_watch (inotify on the file) reads it as each kill happens. */
static long oom_seen = -1;
static int oom_watch = -1;
static struct timespec created_at, started_at;

static int ep, sigfd, listen_fd = -1, log_fd = -1, stdin_fd = -1;
static const char *status;
static int deleted, quit;
/* terminating: SIGTERM came (the node shuts down, or pier's unit is
 * killed): the container is killed, and the monitor exits once its exit is
 * recorded, so that a shutdown never waits on it. */
static int terminating;
static int accept_paused; /* out of descriptors: the listener is off until accept_at */
static struct timespec accept_at;

/* The init's end: reaped, then (once the output has ended or after
 * LOG_DRAIN_MS) recorded in exit.json and status "exited". */
static int init_reaped, exit_code, exit_signal, oom_killed;
static struct timespec finished_at, drain_deadline;

/* An output stream of the container: stdout and stderr pipes, or the pty
 * master as stdout. */
struct output {
	int fd; /* -1 when there is none, or once it has ended */
	const char *name;
	int crlf;
	char *buf;
	size_t n, cap;
};
static struct output outs[2] = {{-1, "stdout", 0, 0, 0, 0}, {-1, "stderr", 0, 0, 0, 0}};
static int pty_fd = -1; /* tty: the master, also outs[0].fd */

enum conn_state { C_READ, C_WAIT, C_ATTACH, C_DELETE };

struct conn {
	int fd;
	enum conn_state state;
	struct conn *next;
	/* C_ATTACH */
	int out[2]; /* write ends of the attacher's output pipes, -1 when none */
	int gave_stdin;
	/* C_READ: when to give up on the request; C_DELETE: the next step */
	struct timespec deadline;
	/* C_DELETE */
	int delete_stage;
};
static struct conn *conns;

/* epoll tags: an fd's kind, packed with a pointer for connections. */
enum { T_SIG = 1, T_LISTEN, T_OUT0, T_OUT1, T_OOM };

/* ---- small helpers ---- */

static struct timespec now(void) {
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return t;
}

/* after returns the monotonic time ms from now. */
static struct timespec after(long ms) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (ms % 1000) * 1000000;
	if (t.tv_nsec >= 1000000000)
		t.tv_sec++, t.tv_nsec -= 1000000000;
	return t;
}

/* fmt_time writes t as RFC 3339 with nanoseconds, trailing zeros trimmed,
 * in UTC, as Go's time.RFC3339Nano; returns its length. */
static size_t fmt_time(char *b, struct timespec t) {
	struct tm tm;
	gmtime_r(&t.tv_sec, &tm);
	size_t n = strftime(b, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	if (t.tv_nsec) {
		n += sprintf(b + n, ".%09ld", t.tv_nsec);
		while (b[n - 1] == '0')
			n--;
	}
	b[n++] = 'Z';
	b[n] = 0;
	return n;
}

/* shimlog writes a line to the shim's log, its standard error. */
static void shimlog(const char *fmt, ...) {
	char line[2048], ts[40];
	fmt_time(ts, now());
	int n = snprintf(line, sizeof line, "%s pier-shim[%d] ", ts, getpid());
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof line - 2)
		n = sizeof line - 2;
	line[n++] = '\n';
	write(2, line, n);
}

static void set_flags(int fd, int nonblock) {
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	if (nonblock)
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* A growing string for JSON answers. */
struct buf {
	char *p;
	size_t n, cap;
};

static void bput(struct buf *b, const char *s, size_t n) {
	if (b->n + n + 1 > b->cap) {
		size_t c = b->cap ? b->cap : 256;
		while (c < b->n + n + 1)
			c *= 2;
		char *p = realloc(b->p, c);
		if (!p)
			return;
		b->p = p, b->cap = c;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

static void bprintf(struct buf *b, const char *fmt, ...) {
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof tmp - 1)
		n = sizeof tmp - 1;
	bput(b, tmp, n);
}

/* bstr appends s as a JSON string. */
static void bstr(struct buf *b, const char *s) {
	bput(b, "\"", 1);
	for (; *s; s++) {
		unsigned char c = *s;
		if (c == '"' || c == '\\') {
			char e[2] = {'\\', c};
			bput(b, e, 2);
		} else if (c < 0x20) {
			bprintf(b, "\\u%04x", c);
		} else {
			bput(b, (const char *)s, 1);
		}
	}
	bput(b, "\"", 1);
}

static void btime(struct buf *b, struct timespec t) {
	char ts[40];
	size_t n = fmt_time(ts, t);
	bput(b, "\"", 1);
	bput(b, ts, n);
	bput(b, "\"", 1);
}

/* ---- JSON requests: one flat object from our own client ---- */

/* jfind returns what follows "key": in s, or NULL. */
static const char *jfind(const char *s, const char *key) {
	char pat[64];
	snprintf(pat, sizeof pat, "\"%s\":", key);
	const char *p = strstr(s, pat);
	return p ? p + strlen(pat) : NULL;
}

static long jint(const char *s, const char *key) {
	const char *p = jfind(s, key);
	return p ? strtol(p, NULL, 10) : 0;
}

static int jbool(const char *s, const char *key) {
	const char *p = jfind(s, key);
	return p && strncmp(p, "true", 4) == 0;
}

/* jstr copies the string value of key (plain: no escapes) into out. */
static int jstr(const char *s, const char *key, char *out, size_t n) {
	const char *p = jfind(s, key);
	if (!p || *p != '"')
		return 0;
	p++;
	size_t i = 0;
	for (; *p && *p != '"' && *p != '\\' && i + 1 < n; p++)
		out[i++] = *p;
	out[i] = 0;
	return *p == '"';
}

/* junescape decodes the JSON string starting after its opening quote at
 * p into out (at most n bytes); \u escapes of the BMP become UTF-8. */
static void junescape(const char *p, char *out, size_t n) {
	size_t i = 0;
	for (; *p && *p != '"' && i + 4 < n; p++) {
		if (*p != '\\') {
			out[i++] = *p;
			continue;
		}
		p++;
		switch (*p) {
		case 'n': out[i++] = '\n'; break;
		case 't': out[i++] = '\t'; break;
		case 'r': out[i++] = '\r'; break;
		case 'b': out[i++] = '\b'; break;
		case 'f': out[i++] = '\f'; break;
		case 'u': {
			unsigned v = 0;
			int k;
			for (k = 1; k <= 4 && p[k]; k++) {
				char c = p[k];
				v = v * 16 + (c >= 'a' ? c - 'a' + 10 : c >= 'A' ? c - 'A' + 10 : c - '0');
			}
			if (k <= 4)
				goto done;
			p += 4;
			if (v < 0x80) {
				out[i++] = v;
			} else if (v < 0x800) {
				out[i++] = 0xc0 | v >> 6, out[i++] = 0x80 | (v & 0x3f);
			} else {
				out[i++] = 0xe0 | v >> 12, out[i++] = 0x80 | ((v >> 6) & 0x3f), out[i++] = 0x80 | (v & 0x3f);
			}
			break;
		}
		case 0: goto done;
		default: out[i++] = *p;
		}
	}
done:
	out[i] = 0;
}

/* ---- the CRI log ---- */

/* open_log opens the log, log_name beneath log_dir, as package beneath
 * does in Go (internal/beneath; shim's TestReopenLogBeneath holds the two
 * to the same rules): openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS
 * relative to the pod's log directory, so that neither ".." nor a symbolic
 * link planted there (by a container that mounts it) makes the monitor, as
 * root, append to a file elsewhere; a regular file only, opened without
 * waiting (a FIFO there does not block the monitor). Returns the
 * descriptor, or -1 with errno set. */
static int open_log(void) {
	int dfd = open(log_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -1;
	struct open_how how = {
		.flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY,
		.mode = 0640,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
	};
	int fd = syscall(SYS_openat2, dfd, log_name, &how, sizeof how);
	int e = errno;
	close(dfd);
	errno = e;
	if (fd < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		errno = EINVAL; /* not a regular file */
		return -1;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}

/* reopen_log opens the log file again (kubelet rotated it); on failure the
 * old file stays in use and errno is set. */
static int reopen_log(void) {
	if (!*log_path)
		return 0;
	int fd = open_log();
	if (fd < 0)
		return -1;
	if (log_fd >= 0)
		close(log_fd);
	log_fd = fd;
	return 0;
}

/* emit appends one CRI log entry: "<time> <stream> <P|F> <content>\n", in
 * one write so that the two streams' entries never interleave. An entry
 * that cannot be written is dropped: the container never waits. */
static void emit(struct output *o, char tag, const char *p, size_t n) {
	if (log_fd < 0)
		return;
	char head[64];
	size_t h = fmt_time(head, now());
	h += sprintf(head + h, " %s %c ", o->name, tag);
	struct iovec iov[3] = {{head, h}, {(void *)p, n}, {"\n", 1}};
	writev(log_fd, iov, 3);
}

/* tee_output copies a chunk of output stream i to every attacher, never waiting:
 * an attacher whose pipe is full loses the chunk. */
static void tee_output(int i, const char *p, size_t n) {
	for (struct conn *c = conns; c; c = c->next)
		if (c->state == C_ATTACH && c->out[i] >= 0)
			write(c->out[i], p, n);
}

static void end_output(int i);

/* read_output reads once from output i (level-triggered: a busy output
 * gets its turn again, after the other events), logs the complete lines and
 * keeps the rest; a line longer than MAX_LINE becomes partial entries. */
static void read_output(int i) {
	struct output *o = &outs[i];
	for (int once = 0; !once; once = 1) {
		if (o->n == o->cap) {
			size_t c = o->cap ? o->cap * 2 : 4096;
			if (c > OUT_CAP)
				c = OUT_CAP;
			char *b = realloc(o->buf, c);
			if (!b)
				return;
			o->buf = b, o->cap = c;
		}
		ssize_t m = read(o->fd, o->buf + o->n, o->cap - o->n);
		if (m < 0 && (errno == EINTR || errno == EAGAIN))
			return;
		if (m <= 0) { /* the end, or a pty whose terminal is gone (EIO) */
			end_output(i);
			return;
		}
		tee_output(i, o->buf + o->n, m);
		o->n += m;
		size_t start = 0;
		for (;;) {
			char *nl = memchr(o->buf + start, '\n', o->n - start);
			if (!nl)
				break;
			size_t len = nl - (o->buf + start);
			const char *line = o->buf + start;
			if (o->crlf && len > 0 && line[len - 1] == '\r')
				len--;
			while (len > MAX_LINE) {
				emit(o, 'P', line, MAX_LINE);
				line += MAX_LINE, len -= MAX_LINE;
			}
			emit(o, 'F', line, len);
			start = nl - o->buf + 1;
		}
		/* A line of exactly MAX_LINE bytes may still end in a full entry. */
		while (o->n - start > MAX_LINE) {
			emit(o, 'P', o->buf + start, MAX_LINE);
			start += MAX_LINE;
		}
		memmove(o->buf, o->buf + start, o->n - start);
		o->n -= start;
	}
}

/* end_output records that output i has ended: what is left without a
 * newline is a partial entry; attachers see their pipe end. */
static void end_output(int i) {
	struct output *o = &outs[i];
	if (o->fd < 0)
		return;
	if (o->n)
		emit(o, 'P', o->buf, o->n);
	free(o->buf);
	o->buf = NULL, o->n = o->cap = 0;
	epoll_ctl(ep, EPOLL_CTL_DEL, o->fd, NULL);
	if (o->fd != pty_fd)
		close(o->fd);
	o->fd = -1;
	for (struct conn *c = conns; c; c = c->next)
		if (c->state == C_ATTACH && c->out[i] >= 0)
			close(c->out[i]), c->out[i] = -1;
}

/* ---- answers ---- */

/* send_msg writes one line of JSON on fd, passing fds with it. */
static int send_msg(int fd, struct buf *b, const int *fds, int nfds) {
	bput(b, "\n", 1);
	struct iovec iov = {b->p, b->n};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	char ctl[CMSG_SPACE(sizeof(int) * MAX_FDS)];
	if (nfds > 0) {
		memset(ctl, 0, sizeof ctl);
		msg.msg_control = ctl;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET, cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	ssize_t n;
	size_t off = 0;
	int ret = 0;
	/* The answers are small; the client reads them. Wait a little if the
	 * socket's buffer is full. */
	while (off < b->n) {
		n = sendmsg(fd, &msg, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			struct pollfd p = {fd, POLLOUT, 0};
			if (poll(&p, 1, 10000) <= 0) {
				ret = -1;
				break;
			}
			continue;
		}
		if (n < 0) {
			ret = -1;
			break;
		}
		off += n;
		iov.iov_base = b->p + off, iov.iov_len = b->n - off;
		msg.msg_control = NULL, msg.msg_controllen = 0;
	}
	free(b->p);
	b->p = NULL, b->n = b->cap = 0;
	return ret;
}

static void answer_ok(int fd) {
	struct buf b = {0};
	bprintf(&b, "{\"v\":%d}", PROTO);
	send_msg(fd, &b, NULL, 0);
}

static void answer_err(int fd, const char *code, const char *fmt, ...) {
	char msg[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	struct buf b = {0};
	bprintf(&b, "{\"v\":%d,\"error\":", PROTO);
	bstr(&b, msg);
	if (code)
		bprintf(&b, ",\"code\":\"%s\"", code);
	bput(&b, "}", 1);
	send_msg(fd, &b, NULL, 0);
}

/* bexit appends the init's exit as a JSON object (an Exit; with the
 * protocol version first, as exit.json holds it). */
static void bexit(struct buf *b, int with_version) {
	bput(b, "{", 1);
	if (with_version)
		bprintf(b, "\"v\":%d,", PROTO);
	bprintf(b, "\"code\":%d", exit_code);
	if (exit_signal)
		bprintf(b, ",\"signal\":%d", exit_signal);
	if (oom_killed)
		bput(b, ",\"oomKilled\":true", 17);
	bput(b, ",\"finishedAt\":", 14);
	btime(b, finished_at);
	bput(b, "}", 1);
}

/* answer_exit answers a wait. */
static void answer_exit(int fd) {
	struct buf b = {0};
	bprintf(&b, "{\"v\":%d,\"exit\":", PROTO);
	bexit(&b, 0);
	bput(&b, "}", 1);
	send_msg(fd, &b, NULL, 0);
}

#define ERR_EXITED "pier-shim: the container has exited: container is not running"

/* ---- connections ---- */

static void drop_conn(struct conn *c);

/* detach ends an attachment; with stdinOnce, the end of one that had stdin
 * closes the container's stdin (a terminal gets its end-of-file character,
 * once). */
static void detach(struct conn *c) {
	for (int i = 0; i < 2; i++)
		if (c->out[i] >= 0)
			close(c->out[i]), c->out[i] = -1;
	if (!c->gave_stdin || !stdin_once)
		return;
	c->gave_stdin = 0;
	if (!tty) {
		if (stdin_fd >= 0)
			close(stdin_fd), stdin_fd = -1;
		return;
	}
	if (!pty_stdin)
		return;
	pty_stdin = 0;
	unsigned char eof = 4;
	struct termios t;
	if (tcgetattr(pty_fd, &t) == 0 && t.c_cc[VEOF])
		eof = t.c_cc[VEOF];
	write(pty_fd, &eof, 1);
}

static void drop_conn(struct conn *c) {
	if (c->state == C_ATTACH)
		detach(c);
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	for (struct conn **p = &conns; *p; p = &(*p)->next)
		if (*p == c) {
			*p = c->next;
			break;
		}
	free(c);
}

/* hold keeps a connection open in state st after its request, watching
 * for its end (the client sends nothing more): level-triggered, so an end
 * that came with the request is seen too. */
static void hold(struct conn *c, enum conn_state st) {
	c->state = st;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static struct rlimit nofile_inherited; /* the limit the monitor started with */
static int nofile_raised;

/* child_setup gives a forked child, before its exec, what a program
 * expects: nothing blocked, SIGPIPE fatal, the descriptor limit the monitor
 * inherited (not its raised one). */
static void child_setup(void) {
	if (nofile_raised)
		setrlimit(RLIMIT_NOFILE, &nofile_inherited);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
}

/* ---- the runtime ---- */

/* runtime_msg picks the runtime's own error message as package oci does:
 * the last error-level entry of its JSON log, else the last line of its
 * standard error, else the last message of any level in the log. */
static void runtime_msg(const char *log, const char *err, const char *op, char *out, size_t n) {
	char last_err[2048] = "", last_any[2048] = "";
	for (const char *line = log; line && *line;) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		char l[4096];
		if (len >= sizeof l)
			len = sizeof l - 1;
		memcpy(l, line, len);
		l[len] = 0;
		const char *m = jfind(l, "msg");
		if (m && *m == '"') {
			char lv[16] = "";
			jstr(l, "level", lv, sizeof lv);
			char msg[2048];
			junescape(m + 1, msg, sizeof msg);
			if (*msg) {
				if (!strcmp(lv, "error") || !strcmp(lv, "fatal") || !strcmp(lv, "panic"))
					strcpy(last_err, msg);
				strcpy(last_any, msg);
			}
		}
		line = end ? end + 1 : NULL;
	}
	const char *pick = last_err;
	char last_line[2048] = "";
	if (!*pick) {
		/* the last non-empty line of stderr */
		const char *e = err + strlen(err);
		while (e > err && (e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\r' || e[-1] == '\t'))
			e--;
		const char *s = e;
		while (s > err && s[-1] != '\n')
			s--;
		size_t len = e - s;
		if (len >= sizeof last_line)
			len = sizeof last_line - 1;
		memcpy(last_line, s, len);
		last_line[len] = 0;
		pick = *last_line ? last_line : last_any;
	}
	while (*pick == ' ' || *pick == '\t')
		pick++;
	/* drop runc's "runc start failed: " */
	char mark[64];
	snprintf(mark, sizeof mark, " %s failed: ", op);
	const char *f = strstr(pick, mark);
	if (f && f > pick && !memchr(pick, ' ', f - pick) && !memchr(pick, '\t', f - pick))
		pick = f + strlen(mark);
	snprintf(out, n, "%s", pick);
	size_t l = strlen(out);
	while (l && (out[l - 1] == ' ' || out[l - 1] == '\n' || out[l - 1] == '\t' || out[l - 1] == '\r'))
		out[--l] = 0;
}

/* not_found tells from the runtime's message that the container does not
 * exist (as package oci's isNotFound). */
static int not_found(const char *msg) {
	if (strstr(msg, "container does not exist"))
		return 1;
	const char *suf = "No such file or directory";
	size_t ml = strlen(msg), sl = strlen(suf), il = strlen(id);
	if (ml < sl || strcmp(msg + ml - sl, suf))
		return 0;
	for (const char *p = msg; (p = strstr(p, "/")) != NULL; p++) {
		if (strncmp(p + 1, id, il))
			continue;
		char c = p[1 + il];
		if (c == 0 || strchr("/'`\"", c))
			return 1;
	}
	return 0;
}

static char *read_file(const char *path) {
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	size_t cap = 4096, n = 0;
	char *b = malloc(cap);
	if (!b) {
		close(fd);
		return NULL;
	}
	for (;;) {
		if (n + 1 >= cap) {
			char *bigger = cap < (1 << 20) ? realloc(b, cap * 2) : NULL;
			if (!bigger)
				break;
			b = bigger, cap *= 2;
		}
		ssize_t m = read(fd, b + n, cap - n - 1);
		if (m < 0 && errno == EINTR)
			continue;
		if (m <= 0)
			break;
		n += m;
	}
	close(fd);
	b[n] = 0;
	return b;
}

/* runtime runs the runtime's command op with args, and waits for it (at
 * most a minute). On failure it returns -1 with the message in err
 * ("runc start <id>: ...") and *nf set when the container does not exist. */
static int runtime(const char *op, const char *const *args, char *err, size_t n, int *nf) {
	char logp[4096], errp[4096];
	snprintf(logp, sizeof logp, "%s/runtime.log", dir);
	snprintf(errp, sizeof errp, "%s/runtime.err", dir);
	unlink(logp);
	const char *argv[16];
	int k = 0;
	argv[k++] = rt_bin;
	if (*rt_root)
		argv[k++] = "--root", argv[k++] = rt_root;
	if (rt_systemd_cgroup)
		argv[k++] = "--systemd-cgroup";
	argv[k++] = "--log", argv[k++] = logp, argv[k++] = "--log-format", argv[k++] = "json";
	argv[k++] = op;
	for (; *args && k < 15; args++)
		argv[k++] = *args;
	argv[k] = NULL;
	*nf = 0;
	int errfd = open(errp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	pid_t pid = fork();
	if (pid == 0) {
		child_setup();
		setpgid(0, 0);
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		dup2(null, 0), dup2(null, 1);
		if (errfd >= 0)
			dup2(errfd, 2);
		execvp(argv[0], (char *const *)argv);
		dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	int ws = 0, ok = 0;
	if (pid > 0) {
		int pfd = syscall(SYS_pidfd_open, pid, 0), r = -1;
		if (pfd >= 0) {
			struct pollfd p = {pfd, POLLIN, 0};
			while ((r = poll(&p, 1, RUNTIME_TIMEOUT_MS)) < 0 && errno == EINTR)
				;
			close(pfd);
			if (r == 0)
				kill(-pid, SIGKILL);
			r = 0;
		} else {
			/* No pidfd (a kernel before 5.3): poll. */
			for (long waited = 0; (r = waitpid(pid, &ws, WNOHANG)) == 0 && waited < RUNTIME_TIMEOUT_MS; waited++)
				usleep(1000);
			if (r == 0)
				kill(-pid, SIGKILL);
		}
		if (r <= 0)
			while (waitpid(pid, &ws, 0) < 0 && errno == EINTR)
				;
		ok = WIFEXITED(ws) && WEXITSTATUS(ws) == 0;
	}
	if (!ok) {
		char *log = read_file(logp), *e = NULL, msg[2048];
		if (errfd >= 0) {
			e = read_file(errp);
		}
		runtime_msg(log ? log : "", e ? e : "", op, msg, sizeof msg);
		if (!*msg) {
			if (pid < 0)
				snprintf(msg, sizeof msg, "fork: %s", strerror(errno));
			else if (WIFSIGNALED(ws))
				snprintf(msg, sizeof msg, "signal: %s", strsignal(WTERMSIG(ws)));
			else
				snprintf(msg, sizeof msg, "exit status %d", WEXITSTATUS(ws));
		}
		snprintf(err, n, "%s %s %s: %s", rt_name, op, id, msg);
		*nf = not_found(msg);
		free(log);
		free(e);
	}
	if (errfd >= 0)
		close(errfd);
	unlink(errp);
	unlink(logp);
	return ok ? 0 : -1;
}

/* ---- the init's exit ---- */

static long read_oom_kills(void) {
	if (!*oom_file)
		return -1;
	char *b = read_file(oom_file);
	if (!b)
		return -1;
	long n = -1;
	for (char *l = b; l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (!strncmp(l, "oom_kill ", 9)) {
			n = strtol(l + 9, NULL, 10);
			break;
		}
	free(b);
	return n;
}

/* note_oom_kills records the count of OOM kills as it is now. */
static void note_oom_kills(void) {
	long k = read_oom_kills();
	if (k > oom_seen)
		oom_seen = k;
}

static void continue_delete(struct conn *c);

/* reap reaps every child that has exited; the init's exit starts the
 * drain of its output. */
static void reap(void) {
	for (;;) {
		int ws;
		pid_t pid = waitpid(-1, &ws, WNOHANG);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid <= 0)
			return;
		if (pid != init_pid || init_reaped)
			continue;
		init_reaped = 1;
		finished_at = now();
		if (WIFSIGNALED(ws)) {
			exit_signal = WTERMSIG(ws);
			exit_code = 128 + exit_signal;
		} else {
			exit_code = WEXITSTATUS(ws);
		}
		note_oom_kills();
		oom_killed = oom_seen > 0 && oom_seen > oom_base;
		drain_deadline = after(LOG_DRAIN_MS);
	}
}

/* finish_exit records the init's exit once the output has ended (or the
 * drain has timed out): exit.json first, then the answers. */
static void finish_exit(void) {
	char path[4096], tmp[4096];
	snprintf(path, sizeof path, "%s/exit.json", dir);
	snprintf(tmp, sizeof tmp, "%s/.exit.json.tmp", dir);
	struct buf b = {0};
	bexit(&b, 1);
	bput(&b, "\n", 1);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600); /* a record: root's alone */
	errno = EIO; /* a short write sets none */
	int ok = fd >= 0 && write(fd, b.p, b.n) == (ssize_t)b.n && fsync(fd) == 0;
	if (fd >= 0)
		close(fd);
	if (ok && rename(tmp, path) == 0) {
		int d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (d >= 0)
			fsync(d), close(d);
	} else {
		shimlog("write the exit file: %s", strerror(errno));
		unlink(tmp);
	}
	free(b.p);
	status = st_exited;
	shimlog("container %s exited: code %d, signal %d, oom killed %s", id, exit_code, exit_signal, oom_killed ? "true" : "false");
	for (struct conn *c = conns, *next; c; c = next) {
		next = c->next;
		if (c->state == C_WAIT) {
			answer_exit(c->fd);
			drop_conn(c);
		} else if (c->state == C_ATTACH) {
			drop_conn(c);
		}
	}
	for (struct conn *c = conns, *next; c; c = next) {
		next = c->next;
		if (c->state == C_DELETE)
			continue_delete(c);
	}
}

/* ---- operations ---- */

static void op_state(int fd) {
	struct buf b = {0};
	bprintf(&b, "{\"v\":%d,\"state\":{\"status\":\"%s\",\"pid\":%d,\"shimPid\":%d,\"createdAt\":", PROTO, status, init_pid, getpid());
	btime(&b, created_at);
	if (started_at.tv_sec) {
		bput(&b, ",\"startedAt\":", 13);
		btime(&b, started_at);
	}
	if (status == st_exited) {
		bput(&b, ",\"exit\":", 8);
		bexit(&b, 0);
	}
	bput(&b, "}}", 2);
	send_msg(fd, &b, NULL, 0);
}

static void op_start(int fd) {
	if (status == st_exited)
		return answer_err(fd, "not_running", ERR_EXITED);
	if (status == st_running)
		return answer_err(fd, NULL, "pier-shim: the container is already started");
	char err[4096];
	int nf;
	const char *args[] = {id, NULL};
	if (runtime("start", args, err, sizeof err, &nf) < 0) {
		reap();
		if (!init_reaped)
			kill(init_pid, SIGKILL);
		return answer_err(fd, nf ? "not_found" : NULL, "%s", err);
	}
	started_at = now();
	if (status == st_created)
		status = st_running;
	answer_ok(fd);
}

static void op_kill(int fd, int sig, int all) {
	if (status == st_exited)
		return answer_err(fd, "not_running", ERR_EXITED);
	char err[4096], s[16];
	int nf;
	snprintf(s, sizeof s, "%d", sig);
	const char *args_all[] = {"--all", id, s, NULL}, *args[] = {id, s, NULL};
	if (runtime("kill", all ? args_all : args, err, sizeof err, &nf) < 0) {
		/* The runtime refuses a container whose init has died. */
		reap();
		if (init_reaped)
			return answer_err(fd, "not_running", ERR_EXITED " (%s)", err);
		return answer_err(fd, nf ? "not_found" : NULL, "%s", err);
	}
	answer_ok(fd);
}

/* op_delete kills the container if it runs and waits for its exit (so that
 * exit.json is written and the OOM counter read before the cgroup goes),
 * then deletes it from the runtime; the shim then exits. */
static void op_delete(struct conn *c) {
	if (deleted) {
		answer_ok(c->fd);
		drop_conn(c);
		return;
	}
	c->state = C_DELETE;
	if (status == st_exited) {
		continue_delete(c);
		return;
	}
	char err[4096];
	int nf;
	const char *args[] = {"--all", id, "9", NULL};
	if (runtime("kill", args, err, sizeof err, &nf) < 0) {
		shimlog("delete: kill: %s", err);
		reap();
		if (!init_reaped)
			kill(init_pid, SIGKILL);
	}
	c->deadline = after(DELETE_WAIT_MS);
	c->delete_stage = 1;
}

static void continue_delete(struct conn *c) {
	if (deleted) {
		answer_ok(c->fd);
		drop_conn(c);
		return;
	}
	char err[4096];
	int nf;
	const char *args[] = {id, NULL}, *force[] = {"--force", id, NULL};
	if (runtime("delete", args, err, sizeof err, &nf) < 0 && !nf) {
		shimlog("delete: %s; forcing", err);
		if (runtime("delete", force, err, sizeof err, &nf) < 0 && !nf) {
			answer_err(c->fd, NULL, "%s", err);
			drop_conn(c);
			return;
		}
	}
	deleted = 1;
	/* From now on a client finds no shim, as after the exit. */
	epoll_ctl(ep, EPOLL_CTL_DEL, listen_fd, NULL);
	close(listen_fd);
	unlink(sock_path);
	answer_ok(c->fd);
	drop_conn(c);
	quit = 1;
}

static void op_attach(struct conn *c, const char *req) {
	if (status == st_exited) {
		answer_err(c->fd, "not_running", ERR_EXITED);
		drop_conn(c);
		return;
	}
	const char *a = jfind(req, "attach");
	char sub[256] = "";
	if (a) {
		const char *e = strchr(a, '}');
		size_t n = e ? (size_t)(e - a) : strlen(a);
		if (n >= sizeof sub)
			n = sizeof sub - 1;
		memcpy(sub, a, n);
		sub[n] = 0;
	}
	int want_in = jbool(sub, "stdin"), want_out[2] = {jbool(sub, "stdout"), jbool(sub, "stderr") && !tty};
	int fds[MAX_FDS], nfds = 0;
	const char *names[MAX_FDS];
	c->out[0] = c->out[1] = -1;
	int fail = 0;
	if (tty) {
		int d = fcntl(pty_fd, F_DUPFD_CLOEXEC, 0);
		if (d < 0)
			fail = 1;
		else
			fds[nfds] = d, names[nfds++] = "pty";
		if (!fail && want_in && pty_stdin) {
			if ((d = fcntl(pty_fd, F_DUPFD_CLOEXEC, 0)) < 0)
				fail = 1;
			else
				fds[nfds] = d, names[nfds++] = "stdin", c->gave_stdin = 1;
		}
	} else if (want_in && stdin_fd >= 0) {
		int d = fcntl(stdin_fd, F_DUPFD_CLOEXEC, 0);
		if (d < 0)
			fail = 1;
		else
			fds[nfds] = d, names[nfds++] = "stdin", c->gave_stdin = 1;
	}
	for (int i = 0; i < 2 && !fail; i++) {
		if (!want_out[i])
			continue;
		int p[2];
		if (pipe2(p, O_CLOEXEC) < 0) {
			fail = 1;
			break;
		}
		fds[nfds] = p[0], names[nfds++] = i ? "stderr" : "stdout";
		if (outs[i].fd < 0) {
			close(p[1]);
			continue;
		}
		c->out[i] = p[1];
		fcntl(p[1], F_SETFL, O_NONBLOCK);
	}
	if (fail) {
		int e = errno;
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		c->gave_stdin = 0;
		answer_err(c->fd, NULL, "pier-shim: attach: %s", strerror(e));
		c->state = C_ATTACH; /* closes the output pipes */
		drop_conn(c);
		return;
	}
	hold(c, C_ATTACH);
	struct buf b = {0};
	bprintf(&b, "{\"v\":%d", PROTO);
	if (nfds) {
		bput(&b, ",\"fds\":[", 8);
		for (int i = 0; i < nfds; i++)
			bprintf(&b, "%s\"%s\"", i ? "," : "", names[i]);
		bput(&b, "]", 1);
	}
	bput(&b, "}", 1);
	int r = send_msg(c->fd, &b, fds, nfds);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	if (r < 0)
		drop_conn(c);
}

/* delegate hands an exec or exec-stream request, unread, to a one-shot
 * "pier-shim exec <dir> <status>", which answers on the connection. */
static void delegate(struct conn *c) {
	pid_t pid = fork();
	if (pid == 0) {
		child_setup();
		if ((c->fd == 3 ? fcntl(3, F_SETFD, 0) : dup2(c->fd, 3)) < 0)
			_exit(127);
		fcntl(3, F_SETFL, fcntl(3, F_GETFL) & ~O_NONBLOCK);
		syscall(SYS_close_range, 4, ~0U, 0);
		execl(helper, "pier-shim", "exec", dir, status, (char *)NULL);
		shimlog("exec %s: %s", helper, strerror(errno));
		_exit(127);
	}
	if (pid < 0) {
		shimlog("fork: %s", strerror(errno));
		answer_err(c->fd, NULL, "pier-shim: exec: fork: %s", strerror(errno));
	}
	drop_conn(c);
}

/* on_request reads a connection's request when its line is complete. It
 * peeks first: an exec request (and the descriptors that come with it) is
 * left for the helper. */
static void on_request(struct conn *c, unsigned events) {
	static char req[REQ_MAX + 1];
	ssize_t n = recv(c->fd, req, REQ_MAX, MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		drop_conn(c);
		return;
	}
	req[n] = 0;
	char op[32] = "";
	int have_op = jstr(req, "op", op, sizeof op);
	char *nl = memchr(req, '\n', n);
	int ended = events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);
	if (!nl && (ended || n >= REQ_MAX)) {
		drop_conn(c); /* a request cut short */
		return;
	}
	if (!nl && !have_op)
		return; /* more to come (edge-triggered) */
	if (jint(req, "v") != PROTO) {
		answer_err(c->fd, "version", "pier-shim: protocol version %ld not supported, this shim speaks version %d", jint(req, "v"), PROTO);
		drop_conn(c);
		return;
	}
	if (!strcmp(op, "exec") || !strcmp(op, "exec-stream")) {
		delegate(c);
		return;
	}
	if (!nl)
		return;
	/* Take the line (and close any descriptor sent with it). */
	size_t len = nl - req + 1;
	char ctl[CMSG_SPACE(sizeof(int) * MAX_FDS)];
	struct iovec iov = {req, len};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
	ssize_t got = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC);
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); got > 0 && cm; cm = CMSG_NXTHDR(&msg, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
			for (int *f = (int *)CMSG_DATA(cm); (char *)f < (char *)cm + cm->cmsg_len; f++)
				close(*f);
	if (got != (ssize_t)len) {
		drop_conn(c);
		return;
	}
	req[len - 1] = 0;
	if (!strcmp(op, "hello")) {
		struct buf b = {0};
		bprintf(&b, "{\"v\":%d,\"pid\":%d}", PROTO, getpid());
		send_msg(c->fd, &b, NULL, 0);
	} else if (!strcmp(op, "state")) {
		op_state(c->fd);
	} else if (!strcmp(op, "start")) {
		op_start(c->fd);
	} else if (!strcmp(op, "kill")) {
		op_kill(c->fd, (int)jint(req, "signal"), jbool(req, "all"));
	} else if (!strcmp(op, "wait")) {
		if (status != st_exited) {
			hold(c, C_WAIT);
			return;
		}
		answer_exit(c->fd);
	} else if (!strcmp(op, "reopen-log")) {
		if (reopen_log() < 0)
			answer_err(c->fd, NULL, "pier-shim: reopen the log: open %s beneath %s: %s", log_name, log_dir, errno == EINVAL ? "not a regular file" : errno == ELOOP ? "a symbolic link is on the way" : strerror(errno));
		else
			answer_ok(c->fd);
	} else if (!strcmp(op, "delete")) {
		op_delete(c);
		return;
	} else if (!strcmp(op, "attach")) {
		op_attach(c, req);
		return;
	} else {
		answer_err(c->fd, NULL, "pier-shim: unknown operation \"%s\"", op);
	}
	drop_conn(c);
}

static void on_accept(void) {
	for (;;) {
		int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				/* Let connections end before trying again. */
				static int told;
				if (!told++)
					shimlog("accept: %s; pausing", strerror(errno));
				epoll_ctl(ep, EPOLL_CTL_DEL, listen_fd, NULL);
				accept_paused = 1, accept_at = after(ACCEPT_PAUSE_MS);
			} else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
				shimlog("accept: %s", strerror(errno));
			}
			return;
		}
		struct conn *c = calloc(1, sizeof *c);
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd, c->out[0] = c->out[1] = -1;
		c->next = conns, conns = c;
		struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c};
		epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
		c->deadline = after(REQUEST_WAIT_MS);
		on_request(c, 0);
	}
}

static void on_conn(struct conn *c, unsigned events) {
	switch (c->state) {
	case C_READ:
		on_request(c, events);
		break;
	case C_WAIT:
	case C_ATTACH:
		/* The client sends nothing after its request: this is its end. */
		drop_conn(c);
		break;
	case C_DELETE:
		break; /* answered when done */
	}
}

/* ---- main ---- */

static long ts_ms_until(struct timespec t) {
	struct timespec m;
	clock_gettime(CLOCK_MONOTONIC, &m);
	long long d = (long long)(t.tv_sec - m.tv_sec) * 1000 + (t.tv_nsec - m.tv_nsec) / 1000000;
	return d < 0 ? 0 : d > 1000000 ? 1000000 : (long)d;
}

static int arg_fd(const char *v) {
	int fd = atoi(v);
	return fd >= 0 ? fd : -1;
}

static void parse_time(const char *v, struct timespec *t) {
	char *end;
	t->tv_sec = strtol(v, &end, 10);
	t->tv_nsec = *end == '.' ? strtol(end + 1, NULL, 10) : 0;
}

/* confine_pod_init takes from the pod init everything a container of its
 * pod could reach through it: the containers share its PID namespace and
 * see it as PID 1, so one with CAP_SYS_PTRACE may open /proc/1/root or
 * attach to it. pierd starts it in mount, network, IPC and UTS namespaces
 * of its own; here it makes an empty read-only tmpfs its root, drops every
 * capability from all its sets and its supplementary groups, and sets
 * no_new_privs and non-dumpable (so that only a process with
 * CAP_SYS_PTRACE may read its /proc files). It stays uid 0 without
 * capabilities: as uid 65534 any host process of that uid could end it,
 * and with it every process of the pod. It returns an error message, or
 * NULL. */
static const char *confine_pod_init(void) {
	/* Nothing inherited stays open (in a user namespace, pierd hands over
	 * the binary as descriptor 3). */
	for (int fd = 3; fd < 1024; fd++)
		close(fd);
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return "make the mounts private";
	if (mount("pod-init", "/proc", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,nr_inodes=1,mode=0555") < 0)
		return "mount an empty root";
	if (chdir("/proc") < 0 || chroot(".") < 0 || chdir("/") < 0)
		return "enter the empty root";
	for (int cap = 0; cap <= 63; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return "drop the bounding set";
	if (setgroups(0, NULL) < 0)
		return "drop the supplementary groups";
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct none[2] = {0};
	if (syscall(SYS_capset, &hdr, none) < 0)
		return "drop the capabilities";
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return "set no_new_privs";
	return NULL;
}

/* pod_init is PID 1 of a pod's PID namespace: it reaps the orphans of the
 * namespace until pierd ends it with SIGKILL, or until SIGTERM from outside
 * the namespace (a shutdown) ends it. It ignores the other signals that
 * would end it by default; the kernel drops the signals a process of the
 * namespace sends it that it has no handler for, SIGTERM included. */
static void __attribute__((noreturn)) pod_init(void) {
	prctl(PR_SET_NAME, "pier-shim");
	const char *err = confine_pod_init();
	if (err) {
		fprintf(stderr, "pier-shim-monitor pod-init: %s: %s\n", err, strerror(errno));
		_exit(1);
	}
	int ignore[] = {SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGPIPE};
	for (size_t i = 0; i < sizeof ignore / sizeof ignore[0]; i++)
		signal(ignore[i], SIG_IGN);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigprocmask(SIG_BLOCK, &set, NULL);
	for (;;) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		if (sigwaitinfo(&set, NULL) == SIGTERM)
			_exit(0); /* the kernel kills the rest of the namespace */
	}
}

/* on_term kills the container's init (and with it its PID namespace) on
 * SIGTERM; the loop ends once the exit is recorded. A created container
 * that never started ends the same way. */
static void on_term(void) {
	if (terminating)
		return;
	terminating = 1;
	shimlog("SIGTERM: killing container %s and exiting once its exit is recorded", id);
	if (!init_reaped)
		kill(init_pid, SIGKILL); /* our child, unreaped: the pid is still its */
}

int main(int argc, char **argv) {
	if (argc == 3 && !strcmp(argv[1], "pod-init"))
		pod_init();
	if (argc < 2 || strcmp(argv[1], "monitor")) {
		fprintf(stderr, "pier-shim-monitor is run by pier-shim, which pierd starts: one per container\n");
		return 2;
	}
	id = dir = sock_path = log_path = log_dir = log_name = oom_file = helper = rt_name = rt_bin = rt_root = "";
	for (int i = 2; i < argc; i++) {
		/* key=value, left as it is: ps shows the command line */
		const char *arg = argv[i], *v = strchr(arg, '=');
		if (!v)
			continue;
		char k[32];
		snprintf(k, sizeof k, "%.*s", (int)(v - arg), arg);
		v++;
		if (!strcmp(k, "id")) id = v;
		else if (!strcmp(k, "dir")) dir = v;
		else if (!strcmp(k, "socket")) sock_path = v;
		else if (!strcmp(k, "log")) log_path = v;
		else if (!strcmp(k, "log-dir")) log_dir = v;
		else if (!strcmp(k, "log-name")) log_name = v;
		else if (!strcmp(k, "oom")) oom_file = v;
		else if (!strcmp(k, "oom-base")) oom_base = atol(v);
		else if (!strcmp(k, "helper")) helper = v;
		else if (!strcmp(k, "runtime-name")) rt_name = v;
		else if (!strcmp(k, "runtime")) rt_bin = v;
		else if (!strcmp(k, "runtime-root")) rt_root = v;
		else if (!strcmp(k, "runtime-systemd-cgroup")) rt_systemd_cgroup = atoi(v);
		else if (!strcmp(k, "pid")) init_pid = atoi(v);
		else if (!strcmp(k, "created")) parse_time(v, &created_at);
		else if (!strcmp(k, "tty")) tty = atoi(v);
		else if (!strcmp(k, "stdin-once")) stdin_once = atoi(v);
		else if (!strcmp(k, "pty-stdin")) pty_stdin = atoi(v);
		else if (!strcmp(k, "listen-fd")) listen_fd = arg_fd(v);
		else if (!strcmp(k, "log-fd")) log_fd = arg_fd(v);
		else if (!strcmp(k, "stdin-fd")) stdin_fd = arg_fd(v);
		else if (!strcmp(k, "stdout-fd")) outs[0].fd = arg_fd(v);
		else if (!strcmp(k, "stderr-fd")) outs[1].fd = arg_fd(v);
		else if (!strcmp(k, "pty-fd")) pty_fd = arg_fd(v);
	}
	if (!*id || !*dir || init_pid <= 0 || listen_fd < 0 || !*helper || !*rt_bin) {
		fprintf(stderr, "pier-shim-monitor: incomplete command line\n");
		return 2;
	}
	if (!*rt_name)
		rt_name = rt_bin;
	if (*log_path && (!*log_dir || !*log_name)) {
		/* The older form, log= alone: beneath the log's own directory. */
		char *slash = strrchr(log_path, '/');
		log_dir = slash && slash != log_path ? strndup(log_path, slash - log_path) : "/";
		log_name = slash ? slash + 1 : log_path;
	}
	status = st_created;
	prctl(PR_SET_NAME, "pier-shim");
	/* Descriptors: as many as allowed (exec restored the soft limit); its
	 * children get the inherited limit back. */
	if (getrlimit(RLIMIT_NOFILE, &nofile_inherited) == 0 && nofile_inherited.rlim_cur < nofile_inherited.rlim_max) {
		struct rlimit raised = {nofile_inherited.rlim_max, nofile_inherited.rlim_max};
		nofile_raised = setrlimit(RLIMIT_NOFILE, &raised) == 0;
	}
	/* It is the container's subreaper already (the flag survives exec). */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	signal(SIGPIPE, SIG_IGN);
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGCHLD);
	sigaddset(&sigs, SIGTERM);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	sigfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (sigfd < 0 || ep < 0) {
		shimlog("signalfd/epoll: %s", strerror(errno));
		return 1;
	}

	struct epoll_event ev = {.events = EPOLLIN};
	ev.data.u64 = T_SIG;
	epoll_ctl(ep, EPOLL_CTL_ADD, sigfd, &ev);
	set_flags(listen_fd, 1);
	ev.data.u64 = T_LISTEN;
	epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev);
	if (log_fd >= 0)
		set_flags(log_fd, 0);
	else
		reopen_log();
	if (stdin_fd >= 0)
		set_flags(stdin_fd, 0); /* blocking: attachers share it */
	if (tty) {
		outs[0].fd = pty_fd, outs[0].crlf = 1;
	}
	for (int i = 0; i < 2; i++) {
		if (outs[i].fd < 0)
			continue;
		set_flags(outs[i].fd, 1);
		struct epoll_event oev = {.events = EPOLLIN};
		oev.data.u64 = T_OUT0 + i;
		epoll_ctl(ep, EPOLL_CTL_ADD, outs[i].fd, &oev);
	}
	/* memory.events (cgroup v2) notifies a change; memory.oom_control (v1)
	 * never does, and stays until the runtime's delete. */
	if (*oom_file && (oom_watch = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) >= 0) {
		struct epoll_event oev = {.events = EPOLLIN};
		oev.data.u64 = T_OOM;
		if (inotify_add_watch(oom_watch, oom_file, IN_MODIFY) < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, oom_watch, &oev) < 0) {
			close(oom_watch);
			oom_watch = -1;
		}
	}
	/* The init may have ended before the exec. */
	reap();

	while (!quit) {
		long timeout = -1;
		if (init_reaped && status != st_exited)
			timeout = ts_ms_until(drain_deadline);
		for (struct conn *c = conns; c; c = c->next)
			if (c->state == C_READ || (c->state == C_DELETE && c->delete_stage)) {
				long t = ts_ms_until(c->deadline);
				if (timeout < 0 || t < timeout)
					timeout = t;
			}
		if (accept_paused) {
			long t = ts_ms_until(accept_at);
			if (timeout < 0 || t < timeout)
				timeout = t;
		}
		struct epoll_event evs[16];
		int n = epoll_wait(ep, evs, 16, (int)timeout);
		if (n < 0 && errno != EINTR) {
			shimlog("epoll_wait: %s", strerror(errno));
			return 1;
		}
		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64;
			if (tag == T_SIG) {
				struct signalfd_siginfo si;
				while (read(sigfd, &si, sizeof si) > 0)
					if (si.ssi_signo == SIGTERM)
						on_term();
				reap();
			} else if (tag == T_OOM) {
				char ib[4096];
				while (read(oom_watch, ib, sizeof ib) > 0)
					;
				note_oom_kills();
			} else if (tag == T_LISTEN) {
				if (!deleted)
					on_accept();
			} else if (tag == T_OUT0 || tag == T_OUT1) {
				int k = tag - T_OUT0;
				if (outs[k].fd >= 0)
					read_output(k);
			} else {
				on_conn(evs[i].data.ptr, evs[i].events);
			}
			if (quit)
				break;
		}
		if (quit)
			break;
		if (init_reaped && status != st_exited && ((outs[0].fd < 0 && outs[1].fd < 0) || ts_ms_until(drain_deadline) == 0))
			finish_exit();
		if (terminating && status == st_exited)
			break;
		if (accept_paused && !deleted && ts_ms_until(accept_at) == 0) {
			accept_paused = 0;
			struct epoll_event lev = {.events = EPOLLIN};
			lev.data.u64 = T_LISTEN;
			epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &lev);
		}
		for (struct conn *c = conns, *next; c; c = next) {
			next = c->next;
			if (c->state == C_READ && ts_ms_until(c->deadline) == 0) {
				drop_conn(c); /* no request in time */
				continue;
			}
			if (c->state != C_DELETE || !c->delete_stage || ts_ms_until(c->deadline) > 0)
				continue;
			if (c->delete_stage == 1) {
				reap();
				if (!init_reaped)
					kill(init_pid, SIGKILL);
				c->delete_stage = 2;
				c->deadline = after(DELETE_WAIT_MS);
			} else {
				answer_err(c->fd, NULL, "pier-shim: the container's init (pid %d) does not exit after SIGKILL", init_pid);
				drop_conn(c);
			}
		}
	}
	for (int i = 0; i < 2; i++)
		if (outs[i].n)
			emit(&outs[i], 'P', outs[i].buf, outs[i].n);
	if (log_fd >= 0)
		close(log_fd);
	shimlog(terminating ? "container %s: exit recorded after SIGTERM, exiting" : "container %s deleted, exiting", id);
	return 0;
}
