//go:build ignore

/* control.c: the control socket: connections, requests, answers. */
#include "monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#define SEND_WAIT_MS 10000 /* for a client's socket buffer to have room */

/* ---- answers ---- */

/* send_msg writes the line in b and a newline on fd, passing nfds
 * descriptors (at most MAX_FDS) with its first byte. A buffer that
 * overflowed is not sent. The answers are small and the client reads them:
 * it waits a little, and only, when the socket's buffer is full. Returns 0,
 * or -1 with errno set. */
int send_msg(int fd, struct buf *b, const int *fds, int nfds) {
	if (nfds < 0 || nfds > MAX_FDS) {
		shimlog("send: %d descriptors, at most %d go with one message", nfds, MAX_FDS);
		errno = EINVAL;
		return -1;
	}
	bput(b, "\n", 1);
	if (b->failed) {
		shimlog("send: the answer does not fit in %zu bytes", b->cap);
		errno = EMSGSIZE;
		return -1;
	}
	struct iovec iov = {b->p, b->n};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	union {
		char b[CMSG_SPACE(sizeof(int) * MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	if (nfds > 0) {
		memset(&ctl, 0, sizeof ctl);
		msg.msg_control = ctl.b;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET, cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	size_t off = 0;
	struct timespec deadline = after(SEND_WAIT_MS);
	while (off < b->n) {
		ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			struct pollfd p = {fd, POLLOUT, 0};
			long left = ms_until(deadline);
			int r = left > 0 ? poll(&p, 1, (int)left) : 0;
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0) {
				if (r == 0)
					errno = ETIMEDOUT;
				return -1;
			}
			continue;
		}
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		off += n;
		iov.iov_base = b->p + off, iov.iov_len = b->n - off;
		msg.msg_control = NULL, msg.msg_controllen = 0; /* sent with the first part */
	}
	return 0;
}

/* send_ans sends an answer, logging a failure. */
static void send_ans(int fd, struct buf *b) {
	if (send_msg(fd, b, NULL, 0) < 0 && errno != EPIPE && errno != ECONNRESET)
		shimlog("answer: %s", strerror(errno));
}

void answer_ok(int fd) {
	char a[64];
	struct buf b = BUF(a);
	jopen(&b);
	jint(&b, FIELD_V, PROTO_VERSION);
	jclose(&b);
	send_ans(fd, &b);
}

void answer_err(int fd, const char *code, const char *fmt, ...) {
	char msg[1024], a[ANSWER_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	struct buf b = BUF(a);
	jopen(&b);
	jint(&b, FIELD_V, PROTO_VERSION);
	jstr(&b, FIELD_ERROR, msg);
	if (code)
		jstr(&b, FIELD_CODE, code);
	jclose(&b);
	send_ans(fd, &b);
}

/* answer_exit answers a wait. */
static void answer_exit(struct monitor *m, int fd) {
	char a[512];
	struct buf b = BUF(a);
	jopen(&b);
	jint(&b, FIELD_V, PROTO_VERSION);
	jkey(&b, FIELD_EXIT);
	bexit(m, &b, 0);
	jclose(&b);
	send_ans(fd, &b);
}

/* ---- connections ---- */

/* detach ends an attachment; with stdinOnce, the end of one that had stdin
 * closes the container's stdin (a terminal gets its end-of-file character,
 * once). */
static void detach(struct monitor *m, struct conn *c) {
	for (int i = 0; i < 2; i++)
		if (c->out[i] >= 0)
			close(c->out[i]), c->out[i] = -1;
	if (!c->gave_stdin || !m->stdin_once)
		return;
	c->gave_stdin = 0;
	if (!m->tty) {
		if (m->stdin_fd >= 0)
			close(m->stdin_fd), m->stdin_fd = -1;
		return;
	}
	if (!m->pty_stdin)
		return;
	m->pty_stdin = 0;
	unsigned char eof = 4;
	struct termios t;
	if (tcgetattr(m->pty_fd, &t) == 0 && t.c_cc[VEOF])
		eof = t.c_cc[VEOF];
	if (write(m->pty_fd, &eof, 1) != 1)
		shimlog("type the end of file on the terminal: %s", strerror(errno));
}

/* drop_conn ends a connection: off epoll and closed now, freed once the
 * current events are handled (sweep_conns), so that no event of this round
 * finds it freed. */
void drop_conn(struct monitor *m, struct conn *c) {
	if (c->dead)
		return;
	if (c->state == C_ATTACH)
		detach(m, c);
	/* The descriptor may live on elsewhere (a helper's copy): then only
	 * the delete takes it off epoll, and if that fails its events would
	 * come with this pointer: it is kept, never freed. */
	if (ep_ctl(m, EPOLL_CTL_DEL, c->fd, 0, 0, "connection") < 0)
		c->kept = 1;
	close(c->fd);
	c->fd = -1;
	c->dead = 1;
}

/* sweep_conns frees the connections dropped. */
void sweep_conns(struct monitor *m) {
	for (struct conn **p = &m->conns; *p;) {
		struct conn *c = *p;
		if (c->dead && !c->kept) {
			*p = c->next;
			free(c);
		} else {
			p = &c->next;
		}
	}
}

/* hold keeps a connection open in state st after its request, watching
 * for its end (the client sends nothing more): level-triggered, so an end
 * that came with the request is seen too. Returns -1 on failure (logged):
 * the caller drops the connection. */
static int hold(struct monitor *m, struct conn *c, enum conn_state st) {
	c->state = st;
	return ep_ctl(m, EPOLL_CTL_MOD, c->fd, EPOLLIN | EPOLLRDHUP, (uintptr_t)c, "connection");
}

/* child_setup gives a forked child, before its exec, what a program
 * expects: nothing blocked, SIGPIPE fatal, the descriptor limit the monitor
 * inherited (not its raised one). */
static void child_setup(struct monitor *m) {
	if (m->nofile_raised)
		setrlimit(RLIMIT_NOFILE, &m->nofile_inherited);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
}

/* ---- operations ---- */

static void op_hello(int fd) {
	char a[64];
	struct buf b = BUF(a);
	jopen(&b);
	jint(&b, FIELD_V, PROTO_VERSION);
	jint(&b, FIELD_PID, getpid());
	jclose(&b);
	send_ans(fd, &b);
}

static void op_state(struct monitor *m, int fd) {
	char a[1024];
	struct buf b = BUF(a);
	jopen(&b);
	jint(&b, FIELD_V, PROTO_VERSION);
	jkey(&b, FIELD_STATE);
	jopen(&b);
	jstr(&b, FIELD_STATUS, status_name(m->status));
	jint(&b, FIELD_PID, m->init_pid);
	jint(&b, FIELD_SHIM_PID, getpid());
	jtime(&b, FIELD_CREATED_AT, m->created_at);
	if (m->started_at.tv_sec || m->started_at.tv_nsec)
		jtime(&b, FIELD_STARTED_AT, m->started_at);
	if (m->status == ST_EXITED) {
		jkey(&b, FIELD_EXIT);
		bexit(m, &b, 0);
	}
	jclose(&b);
	jclose(&b);
	send_ans(fd, &b);
}

/* op_started records that pierd has run the runtime's start: running
 * (unless it has exited already: it did start, but stays exited). */
static void op_started(struct monitor *m, int fd) {
	if (!m->started_at.tv_sec && !m->started_at.tv_nsec)
		m->started_at = now();
	if (m->status == ST_CREATED)
		m->status = ST_RUNNING;
	answer_ok(fd);
}

/* finish_delete ends the monitor once the exit is recorded: the socket
 * goes (from now on a client finds no shim, as after the exit), every
 * delete is answered, and the loop ends. */
static void finish_delete(struct monitor *m) {
	if (!m->deleted) {
		m->deleted = 1;
		if (m->listen_fd >= 0) {
			if (!m->accept_paused)
				ep_ctl(m, EPOLL_CTL_DEL, m->listen_fd, 0, 0, "listener");
			close(m->listen_fd);
			m->listen_fd = -1;
		}
		if (*m->sock_path && unlink(m->sock_path) < 0 && errno != ENOENT)
			shimlog("remove the socket %s: %s", m->sock_path, strerror(errno));
	}
	for (struct conn *c = m->conns; c; c = c->next)
		if (!c->dead && c->state == C_DELETE) {
			answer_ok(c->fd);
			drop_conn(m, c);
		}
	m->quit = 1;
}

/* op_delete kills the container's init if it has not exited, and waits
 * (in the loop: conns_exited, or conns_tick after DELETE_WAIT_MS) for its
 * exit to be recorded, so that exit.json is written and the OOM counter
 * read before pierd deletes the container from the runtime; then the
 * monitor ends. */
static void op_delete(struct monitor *m, struct conn *c) {
	c->state = C_DELETE;
	if (m->deleted || m->status == ST_EXITED) {
		finish_delete(m);
		return;
	}
	reap(m);
	/* Our child, unreaped: the pid is still its. */
	if (!m->init_reaped && kill(m->init_pid, SIGKILL) < 0)
		shimlog("delete: kill the init (pid %d): %s", m->init_pid, strerror(errno));
	c->deadline = after(DELETE_WAIT_MS);
}

static void op_attach(struct monitor *m, struct conn *c, const struct request *req) {
	if (m->status == ST_EXITED) {
		answer_err(c->fd, CODE_NOT_RUNNING, MSG_EXITED);
		drop_conn(m, c);
		return;
	}
	int want_in = req->attach_stdin, want_out[2] = {req->attach_stdout, req->attach_stderr && !m->tty};
	int fds[MAX_FDS], nfds = 0;
	const char *names[MAX_FDS];
	c->out[0] = c->out[1] = -1;
	int fail = 0;
	if (m->tty) {
		int d = fcntl(m->pty_fd, F_DUPFD_CLOEXEC, 0);
		if (d < 0)
			fail = 1;
		else
			fds[nfds] = d, names[nfds++] = FD_PTY;
		if (!fail && want_in && m->pty_stdin) {
			if ((d = fcntl(m->pty_fd, F_DUPFD_CLOEXEC, 0)) < 0)
				fail = 1;
			else
				fds[nfds] = d, names[nfds++] = FD_STDIN, c->gave_stdin = 1;
		}
	} else if (want_in && m->stdin_fd >= 0) {
		int d = fcntl(m->stdin_fd, F_DUPFD_CLOEXEC, 0);
		if (d < 0)
			fail = 1;
		else
			fds[nfds] = d, names[nfds++] = FD_STDIN, c->gave_stdin = 1;
	}
	for (int i = 0; i < 2 && !fail; i++) {
		if (!want_out[i])
			continue;
		int p[2];
		if (pipe2(p, O_CLOEXEC) < 0) {
			fail = 1;
			break;
		}
		fds[nfds] = p[0], names[nfds++] = i ? FD_STDERR : FD_STDOUT;
		if (m->outs[i].fd < 0) {
			close(p[1]); /* ended: the attacher reads the end */
			continue;
		}
		c->out[i] = p[1];
		if (fcntl(p[1], F_SETFL, O_NONBLOCK) < 0) {
			fail = 1;
			break;
		}
	}
	if (fail) {
		int e = errno;
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		c->gave_stdin = 0;
		answer_err(c->fd, NULL, "pier-shim: attach: %s", strerror(e));
		c->state = C_ATTACH; /* closes the output pipes */
		drop_conn(m, c);
		return;
	}
	char a[256];
	struct buf b = BUF(a);
	jopen(&b);
	jint(&b, FIELD_V, PROTO_VERSION);
	if (nfds) {
		jarr_open(&b, FIELD_FDS);
		for (int i = 0; i < nfds; i++)
			jarr_str(&b, names[i]);
		jarr_close(&b);
	}
	jclose(&b);
	int r = hold(m, c, C_ATTACH);
	if (r == 0 && (r = send_msg(c->fd, &b, fds, nfds)) < 0 && errno != EPIPE && errno != ECONNRESET)
		shimlog("attach: answer: %s", strerror(errno));
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	if (r < 0) {
		c->gave_stdin = 0; /* the client has no stdin to end */
		drop_conn(m, c);
	}
}

/* delegate hands an exec or exec-stream request, unread, to a one-shot
 * "pier-shim exec <dir> <status>", which answers on the connection (its
 * fd 3). */
static void delegate(struct monitor *m, struct conn *c) {
	pid_t pid = fork();
	if (pid == 0) {
		if ((c->fd == 3 ? fcntl(3, F_SETFD, 0) : dup2(c->fd, 3)) < 0)
			_exit(127);
		int fl = fcntl(3, F_GETFL);
		if (fl < 0 || fcntl(3, F_SETFL, fl & ~O_NONBLOCK) < 0)
			_exit(127);
		/* Above the inherited limit too: before child_setup lowers it. */
		close_from(4);
		child_setup(m);
		execl(m->helper, "pier-shim", "exec", m->dir, status_name(m->status), (char *)NULL);
		shimlog("exec %s: %s", m->helper, strerror(errno));
		_exit(127);
	}
	if (pid < 0) {
		shimlog("fork: %s", strerror(errno));
		answer_err(c->fd, NULL, "pier-shim: exec: fork: %s", strerror(errno));
	}
	drop_conn(m, c);
}

static int is_delegated(const char *op) {
	return !strcmp(op, OP_EXEC) || !strcmp(op, OP_EXEC_STREAM);
}

/* take_line reads the len bytes of the request's line (closing any
 * descriptor sent with it). */
static int take_line(struct conn *c, char *buf, size_t len) {
	union {
		char b[CMSG_SPACE(sizeof(int) * MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {buf, len};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl};
	ssize_t got;
	while ((got = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	for (struct cmsghdr *cm = got >= 0 ? CMSG_FIRSTHDR(&msg) : NULL; cm; cm = CMSG_NXTHDR(&msg, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
			for (size_t k = 0; k < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++) {
				int f;
				memcpy(&f, CMSG_DATA(cm) + k * sizeof(int), sizeof f);
				close(f);
			}
	return got == (ssize_t)len ? 0 : -1;
}

/* serve answers the request peeked into buf (n bytes, parsed: r); full:
 * the peek filled the largest buffer it may have. */
static void serve(struct monitor *m, struct conn *c, uint32_t events, char *buf, int full, int r, struct request req) {
	if (r == REQ_ERROR && !req.prefix_only) {
		answer_err(c->fd, NULL, "pier-shim: bad request: %s", req.err);
		drop_conn(m, c);
		return;
	}
	if ((req.have_v && req.v != PROTO_VERSION) || (r == REQ_COMPLETE && !req.have_v)) {
		answer_err(c->fd, CODE_VERSION, "pier-shim: protocol version %ld not supported, this shim speaks version %d", req.have_v ? req.v : 0, PROTO_VERSION);
		drop_conn(m, c);
		return;
	}
	if (req.have_op && is_delegated(req.op)) {
		delegate(m, c);
		return;
	}
	if (r != REQ_COMPLETE) {
		if (r == REQ_ERROR || req.prefix_only || full) {
			answer_err(c->fd, NULL, "pier-shim: request too large (%s): at most %d bytes, %d values", req.have_op ? req.op : "no op", REQ_MAX, REQ_TOKENS);
			drop_conn(m, c);
		} else if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
			drop_conn(m, c); /* a request cut short */
		}
		return; /* more to come (edge-triggered) */
	}
	if (take_line(c, buf, req.len) < 0) {
		drop_conn(m, c);
		return;
	}
	const char *op = req.have_op ? req.op : "";
	if (!strcmp(op, OP_HELLO)) {
		op_hello(c->fd);
	} else if (!strcmp(op, OP_STATE)) {
		op_state(m, c->fd);
	} else if (!strcmp(op, OP_STARTED)) {
		op_started(m, c->fd);
	} else if (!strcmp(op, OP_WAIT)) {
		if (m->status != ST_EXITED) {
			if (hold(m, c, C_WAIT) < 0)
				drop_conn(m, c);
			return;
		}
		answer_exit(m, c->fd);
	} else if (!strcmp(op, OP_REOPEN_LOG)) {
		if (reopen_log(m) < 0)
			answer_err(c->fd, NULL, "pier-shim: reopen the log: open %s beneath %s: %s", m->log_name, m->log_dir, errno == EINVAL ? "not a regular file" : errno == ELOOP ? "a symbolic link is on the way" : strerror(errno));
		else
			answer_ok(c->fd);
	} else if (!strcmp(op, OP_DELETE)) {
		op_delete(m, c);
		return;
	} else if (!strcmp(op, OP_ATTACH)) {
		op_attach(m, c, &req);
		return;
	} else if (!strcmp(op, "start") || !strcmp(op, "kill")) {
		/* What monitors before this one did: a pierd of that version still
		 * runs after an upgrade. */
		answer_err(c->fd, NULL, "pier-shim: unknown operation \"%s\": pierd runs the runtime's %s itself since the monitor stopped running runtime commands; restart pierd after upgrading pier", op, op);
	} else {
		answer_err(c->fd, NULL, "pier-shim: unknown operation \"%s\"", op);
	}
	drop_conn(m, c);
}

/* on_request reads a connection's request when its line is complete. It
 * peeks first: an exec request (and the descriptors that come with it) is
 * left for the helper, whatever its length, once its op is known. The peek
 * takes REQ_PEEK bytes, then for a longer request of the monitor's own (in
 * practice none) REQ_MAX in a buffer mapped for the time of the request,
 * so that it leaves nothing resident behind. */
static void on_request(struct monitor *m, struct conn *c, uint32_t events) {
	char *buf = m->req, *big = NULL;
	size_t cap = REQ_PEEK;
	struct request req;
	ssize_t n;
	int r, full = 0;
	for (;;) {
		n = recv(c->fd, buf, cap, MSG_PEEK);
		if (n < 0 && errno == EINTR)
			continue; /* edge-triggered: the edge would be lost */
		if (n < 0 && errno == EAGAIN)
			goto out;
		if (n <= 0) {
			drop_conn(m, c); /* gone before its request */
			goto out;
		}
		buf[n] = 0;
		r = parse_request(buf, n, &req);
		full = (size_t)n == cap;
		if (r != REQ_PARTIAL || req.prefix_only || !full || cap == REQ_MAX || (req.have_op && is_delegated(req.op)))
			break;
		big = mmap(NULL, REQ_MAX + 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (big == MAP_FAILED) {
			shimlog("a buffer for a request: %s", strerror(errno));
			big = NULL;
			break; /* answered: too large */
		}
		buf = big, cap = REQ_MAX;
	}
	serve(m, c, events, buf, full, r, req);
out:
	if (big && munmap(big, REQ_MAX + 1) < 0)
		shimlog("unmap a request's buffer: %s", strerror(errno));
}

void on_accept(struct monitor *m) {
	while (m->listen_fd >= 0) { /* a delete served below closes it */
		int fd = accept4(m->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* Let connections end before trying again. */
				if (!m->accept_told++)
					shimlog("accept: %s; pausing", strerror(errno));
				if (ep_ctl(m, EPOLL_CTL_DEL, m->listen_fd, 0, 0, "listener") == 0)
					m->accept_paused = 1, m->accept_at = after(ACCEPT_PAUSE_MS);
			} else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
				shimlog("accept: %s", strerror(errno));
			}
			return;
		}
		struct conn *c = calloc(1, sizeof *c);
		if (!c) {
			shimlog("accept: %s", strerror(errno));
			close(fd);
			continue;
		}
		c->fd = fd, c->out[0] = c->out[1] = -1;
		if (ep_ctl(m, EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLRDHUP | EPOLLET, (uintptr_t)c, "connection") < 0) {
			close(fd);
			free(c);
			continue;
		}
		c->next = m->conns, m->conns = c;
		c->deadline = after(REQUEST_WAIT_MS);
		on_request(m, c, 0);
	}
}

void on_conn(struct monitor *m, struct conn *c, uint32_t events) {
	if (c->dead)
		return;
	switch (c->state) {
	case C_READ:
		on_request(m, c, events);
		break;
	case C_WAIT:
	case C_ATTACH:
		/* The client sends nothing after its request: this is its end. */
		drop_conn(m, c);
		break;
	case C_DELETE:
		break; /* answered when done */
	}
}

/* conns_exited answers the waits and ends the attachments once the exit is
 * recorded; a delete waiting for it ends the monitor. */
void conns_exited(struct monitor *m) {
	int deleting = 0;
	for (struct conn *c = m->conns; c; c = c->next) {
		if (c->dead)
			continue;
		if (c->state == C_WAIT) {
			answer_exit(m, c->fd);
			drop_conn(m, c);
		} else if (c->state == C_ATTACH) {
			drop_conn(m, c);
		} else if (c->state == C_DELETE) {
			deleting = 1;
		}
	}
	if (deleting)
		finish_delete(m);
}

/* conns_tick ends the connections whose time is up: no request in time, or
 * a delete whose init has not exited DELETE_WAIT_MS after SIGKILL. */
void conns_tick(struct monitor *m) {
	for (struct conn *c = m->conns; c; c = c->next) {
		if (c->dead || (c->state != C_READ && c->state != C_DELETE) || ms_until(c->deadline) > 0)
			continue;
		if (c->state == C_DELETE)
			answer_err(c->fd, NULL, "pier-shim: the container's init (pid %d) does not exit after SIGKILL", m->init_pid);
		drop_conn(m, c);
	}
}

/* conns_timeout returns the milliseconds until the next connection's
 * deadline, or -1 when none has one. */
long conns_timeout(struct monitor *m) {
	long timeout = -1;
	for (struct conn *c = m->conns; c; c = c->next)
		if (!c->dead && (c->state == C_READ || c->state == C_DELETE)) {
			long t = ms_until(c->deadline);
			if (timeout < 0 || t < timeout)
				timeout = t;
		}
	return timeout;
}
