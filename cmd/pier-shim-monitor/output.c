//go:build ignore

/* output.c: the container's output: the CRI log writer and the attach tee. */
#include "monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static void end_output(struct monitor *m, int i);

/* open_log opens the log, log_name beneath log_dir, as package beneath
 * does in Go (internal/beneath; shim's TestReopenLogBeneath holds the two
 * to the same rules): openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS
 * relative to the pod's log directory, so that neither ".." nor a symbolic
 * link planted there (by a container that mounts it) makes the monitor, as
 * root, append to a file elsewhere; a regular file only, opened without
 * waiting (a FIFO there does not block the monitor). Returns the
 * descriptor, or -1 with errno set. */
int open_log(struct monitor *m) {
	int dfd = open(m->log_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -1;
	struct open_how how = {
		.flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY,
		.mode = 0640,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
	};
	int fd = syscall(SYS_openat2, dfd, m->log_name, &how, sizeof how);
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
	if (set_flags(fd, 0) < 0) {
		e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* reopen_log opens the log file again (kubelet rotated it); on failure the
 * old file stays in use and errno is set. */
int reopen_log(struct monitor *m) {
	if (!*m->log_path)
		return 0;
	int fd = open_log(m);
	if (fd < 0)
		return -1;
	if (m->log_fd >= 0)
		close(m->log_fd);
	m->log_fd = fd;
	m->log_failing = 0;
	return 0;
}

/* log_entry, the splitter's sink, appends one CRI log entry: "<time>
 * <stream> <P|F> <content>\n", in one write so that the two streams'
 * entries never interleave. An entry that cannot be written is dropped
 * (the first failure of a run is logged): the container never waits. */
static void log_entry(void *arg, char tag, const char *p, size_t n) {
	struct output *o = arg;
	struct monitor *m = o->m;
	if (m->log_fd < 0)
		return;
	char head[64];
	size_t h = fmt_time(head, now());
	h += snprintf(head + h, sizeof head - h, " %s %c ", o->name, tag);
	struct iovec iov[3] = {{head, h}, {(void *)p, n}, {"\n", 1}};
	struct iovec *v = iov;
	int cnt = 3;
	while (cnt > 0) {
		ssize_t w = writev(m->log_fd, v, cnt);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (!m->log_failing)
				shimlog("write the container's log: %s; dropping its output until it works again", w < 0 ? strerror(errno) : "nothing written");
			m->log_failing = 1;
			return;
		}
		/* a short write (the disk is full): the rest, still in order */
		while (cnt > 0 && (size_t)w >= v->iov_len)
			w -= v->iov_len, v++, cnt--;
		if (cnt > 0)
			v->iov_base = (char *)v->iov_base + w, v->iov_len -= w;
	}
	if (m->log_failing)
		shimlog("the container's log is written again");
	m->log_failing = 0;
}

/* tee_output copies a chunk of output stream i to every attacher, never
 * waiting: an attacher whose pipe is full loses (the rest of) the chunk. */
static void tee_output(struct monitor *m, int i, const char *p, size_t n) {
	for (struct conn *c = m->conns; c; c = c->next) {
		if (c->dead || c->state != C_ATTACH || c->out[i] < 0)
			continue;
		if (write(c->out[i], p, n) < 0) {
			/* full (EAGAIN) or gone (EPIPE): the attacher's loss */
		}
	}
}

/* read_output reads once from output i (level-triggered: a busy output
 * gets its turn again, after the other events), logs the complete lines and
 * keeps the rest; a line longer than MAX_LINE becomes partial entries. */
void read_output(struct monitor *m, int i) {
	struct output *o = &m->outs[i];
	size_t room;
	char *p = split_room(&o->split, &room);
	ssize_t r = read(o->fd, p, room);
	if (r < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (r <= 0) { /* the end, or a pty whose terminal is gone (EIO) */
		end_output(m, i);
		return;
	}
	tee_output(m, i, p, r);
	split_add(&o->split, r, log_entry, o);
}

/* end_output records that output i has ended: what is left without a
 * newline is a partial entry; attachers see their pipe end. */
static void end_output(struct monitor *m, int i) {
	struct output *o = &m->outs[i];
	if (o->fd < 0)
		return;
	split_end(&o->split, log_entry, o);
	/* Off epoll before the close: a pty master stays open (attachers get
	 * duplicates of it), and is never to wake the loop again. */
	ep_ctl(m, EPOLL_CTL_DEL, o->fd, 0, 0, o->name);
	if (o->fd != m->pty_fd)
		close(o->fd);
	o->fd = -1;
	for (struct conn *c = m->conns; c; c = c->next)
		if (c->state == C_ATTACH && c->out[i] >= 0)
			close(c->out[i]), c->out[i] = -1;
}

/* flush_outputs logs what the outputs hold, without a newline, as
 * partial entries: the monitor is ending. */
void flush_outputs(struct monitor *m) {
	for (int i = 0; i < 2; i++)
		split_end(&m->outs[i].split, log_entry, &m->outs[i]);
}
