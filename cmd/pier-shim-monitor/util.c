//go:build ignore

/* util.c: time, the shim's log, JSON answers, descriptors. */
#include "monitor.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

struct timespec now(void) {
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return t;
}

/* after returns the monotonic time ms from now. */
struct timespec after(long ms) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (ms % 1000) * 1000000;
	if (t.tv_nsec >= 1000000000)
		t.tv_sec++, t.tv_nsec -= 1000000000;
	return t;
}

/* ms_until returns the milliseconds until monotonic time t, 0 once past
 * (at most 1000 s: an epoll timeout). */
long ms_until(struct timespec t) {
	struct timespec m;
	clock_gettime(CLOCK_MONOTONIC, &m);
	long long d = (long long)(t.tv_sec - m.tv_sec) * 1000 + (t.tv_nsec - m.tv_nsec) / 1000000;
	if (d == 0 && (t.tv_sec > m.tv_sec || (t.tv_sec == m.tv_sec && t.tv_nsec > m.tv_nsec)))
		d = 1; /* less than a millisecond: not yet */
	return d < 0 ? 0 : d > 1000000 ? 1000000 : (long)d;
}

/* fmt_time writes t as RFC 3339 with nanoseconds, trailing zeros trimmed,
 * in UTC, as Go's time.RFC3339Nano, into b (40 bytes); returns its length. */
size_t fmt_time(char *b, struct timespec t) {
	struct tm tm;
	if (!gmtime_r(&t.tv_sec, &tm))
		memset(&tm, 0, sizeof tm);
	size_t n = strftime(b, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	if (t.tv_nsec > 0 && t.tv_nsec < 1000000000) {
		n += snprintf(b + n, 40 - n, ".%09ld", t.tv_nsec);
		while (b[n - 1] == '0')
			n--;
	}
	b[n++] = 'Z';
	b[n] = 0;
	return n;
}

/* shimlog writes a line to the shim's log, its standard error. A line that
 * cannot be written is lost: there is nowhere else to tell. */
void shimlog(const char *fmt, ...) {
	char line[2048], ts[40];
	fmt_time(ts, now());
	int n = snprintf(line, sizeof line, "%s pier-shim[%d] ", ts, getpid());
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	va_end(ap);
	if (k > 0)
		n += k;
	if (n > (int)sizeof line - 2)
		n = sizeof line - 2;
	line[n++] = '\n';
	if (write_all(2, line, n) < 0) {
		/* deliberately ignored */
	}
}

/* set_flags makes fd close-on-exec and non-blocking, or blocking. */
int set_flags(int fd, int nonblock) {
	int fl;
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 || (fl = fcntl(fd, F_GETFL)) < 0)
		return -1;
	int want = nonblock ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
	return want == fl ? 0 : fcntl(fd, F_SETFL, want);
}

/* write_all writes all n bytes, through short writes and EINTR; -1 with
 * errno set on failure (EIO when a write wrote nothing). */
int write_all(int fd, const void *p, size_t n) {
	const char *s = p;
	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (w == 0)
				errno = EIO;
			return -1;
		}
		s += w, n -= w;
	}
	return 0;
}

#ifndef __GLIBC__
/* musl (the monitor's libc, see the Makefile) has no close_range wrapper
 * before 1.2.4: the system call itself. */
static int close_range(unsigned int first, unsigned int last, int flags) {
	return (int)syscall(SYS_close_range, first, last, flags);
}
#endif

/* close_from closes every descriptor from lowfd up: close_range, or where
 * the kernel has none (before 5.9) or it fails, each descriptor
 * /proc/self/fd lists, or without /proc each one below the limit. */
int close_from(int lowfd) {
	if (close_range(lowfd, ~0U, 0) == 0)
		return 0;
	int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		char b[4096];
		long n;
		/* /proc/self/fd lists by number: closing as it goes skips none */
		/* The system call: the libcs' wrappers differ in their types. */
		while ((n = syscall(SYS_getdents64, dfd, b, sizeof b)) > 0) {
			for (long off = 0; off < n;) {
				struct dirent64 *d = (struct dirent64 *)(b + off);
				off += d->d_reclen;
				char *end;
				long fd = strtol(d->d_name, &end, 10);
				if (*end == 0 && end != d->d_name && fd >= lowfd && fd != dfd)
					close((int)fd);
			}
		}
		close(dfd);
		if (n == 0)
			return 0;
	}
	struct rlimit rl;
	long max = 65536;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY)
		max = (long)rl.rlim_max;
	for (long fd = lowfd; fd < max; fd++)
		close((int)fd);
	return 0;
}

/* read_small_file reads path (at most size - 1 bytes) into buf, NUL
 * terminated; returns its length, or -1 with errno set. */
long read_small_file(const char *path, char *buf, size_t size) {
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t n = 0;
	while (n + 1 < size) {
		ssize_t r = read(fd, buf + n, size - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			close(fd);
			errno = e;
			return -1;
		}
		if (r == 0)
			break;
		n += r;
	}
	close(fd);
	buf[n] = 0;
	return (long)n;
}

const char *status_name(enum status st) {
	switch (st) {
	case ST_CREATED: return STATUS_CREATED;
	case ST_RUNNING: return STATUS_RUNNING;
	case ST_EXITED: break;
	}
	return STATUS_EXITED;
}

/* ep_ctl is epoll_ctl on the monitor's epoll, with the event's data; a
 * failure is logged, naming what. */
int ep_ctl(struct monitor *m, int op, int fd, uint32_t events, uint64_t data, const char *what) {
	struct epoll_event ev = {.events = events, .data.u64 = data};
	if (epoll_ctl(m->ep, op, fd, &ev) == 0)
		return 0;
	int e = errno;
	shimlog("epoll_ctl(%s, %s): %s", op == EPOLL_CTL_ADD ? "add" : op == EPOLL_CTL_MOD ? "mod" : "del", what, strerror(e));
	errno = e;
	return -1;
}

/* ---- JSON, in a fixed buffer ---- */

void bput(struct buf *b, const char *s, size_t n) {
	if (b->failed)
		return;
	if (n >= b->cap - b->n) { /* and its NUL */
		b->failed = 1;
		return;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

static void bputs(struct buf *b, const char *s) {
	bput(b, s, strlen(s));
}

/* bstr appends s as a JSON string. */
static void bstr(struct buf *b, const char *s) {
	bput(b, "\"", 1);
	for (const char *run = s;; s++) {
		unsigned char c = *s;
		if (c && c != '"' && c != '\\' && c >= 0x20)
			continue;
		bput(b, run, s - run);
		if (!c)
			break;
		char e[8];
		if (c == '"' || c == '\\')
			e[0] = '\\', e[1] = c, e[2] = 0;
		else
			snprintf(e, sizeof e, "\\u%04x", c);
		bputs(b, e);
		run = s + 1;
	}
	bput(b, "\"", 1);
}

void jopen(struct buf *b) {
	bput(b, "{", 1);
	b->comma = 0;
}

void jclose(struct buf *b) {
	bput(b, "}", 1);
	b->comma = 1;
}

void jkey(struct buf *b, const char *key) {
	if (b->comma)
		bput(b, ",", 1);
	bstr(b, key);
	bput(b, ":", 1);
	b->comma = 0;
}

void jint(struct buf *b, const char *key, long v) {
	char n[24];
	jkey(b, key);
	bput(b, n, snprintf(n, sizeof n, "%ld", v));
	b->comma = 1;
}

void jstr(struct buf *b, const char *key, const char *s) {
	jkey(b, key);
	bstr(b, s);
	b->comma = 1;
}

void jtrue(struct buf *b, const char *key) {
	jkey(b, key);
	bputs(b, "true");
	b->comma = 1;
}

void jtime(struct buf *b, const char *key, struct timespec t) {
	char ts[40];
	fmt_time(ts, t);
	jstr(b, key, ts);
}

void jarr_open(struct buf *b, const char *key) {
	jkey(b, key);
	bput(b, "[", 1);
	b->comma = 0;
}

void jarr_str(struct buf *b, const char *s) {
	if (b->comma)
		bput(b, ",", 1);
	bstr(b, s);
	b->comma = 1;
}

void jarr_close(struct buf *b) {
	bput(b, "]", 1);
	b->comma = 1;
}
