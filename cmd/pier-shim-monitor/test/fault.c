/*
 * fault.c: fault injection for the monitor's tests. bin/pier-shim-monitor-fault
 * links it with -Wl,--wrap=NAME for each NAME below, so that the monitor's
 * calls of NAME come here. PIER_FAULT="name:N[,name:N...]" fails the Nth
 * call of name (counting from 1), "name:N+" the Nth and every later one,
 * "name:*" every one; each failure is told on standard error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { F_CALLOC, F_EPOLL_CTL, F_CLOSE_RANGE, F_KILL, F_FSYNC, F_RENAME, F_SENDMSG, F_N };

static int fault(int which, const char *name) {
	static unsigned long calls[F_N];
	unsigned long n = ++calls[which];
	const char *spec = getenv("PIER_FAULT");
	if (!spec)
		return 0;
	size_t len = strlen(name);
	for (const char *p = spec; *p;) {
		const char *end = strchr(p, ',');
		if (!end)
			end = p + strlen(p);
		if ((size_t)(end - p) > len + 1 && !memcmp(p, name, len) && p[len] == ':') {
			const char *v = p + len + 1;
			char *e;
			unsigned long k = *v == '*' ? 1 : strtoul(v, &e, 10);
			if (*v == '*' || n == k || (*e == '+' && n >= k)) {
				char msg[128];
				int m = snprintf(msg, sizeof msg, "fault: %s call %lu fails\n", name, n);
				if (write(2, msg, m) < 0) {
					/* nowhere to tell */
				}
				return 1;
			}
		}
		p = *end ? end + 1 : end;
	}
	return 0;
}

void *__real_calloc(size_t, size_t);
int __real_epoll_ctl(int, int, int, struct epoll_event *);
int __real_close_range(unsigned, unsigned, int);
int __real_kill(pid_t, int);
int __real_fsync(int);
int __real_rename(const char *, const char *);
ssize_t __real_sendmsg(int, const struct msghdr *, int);

void *__wrap_calloc(size_t n, size_t size) {
	if (fault(F_CALLOC, "calloc"))
		return errno = ENOMEM, NULL;
	return __real_calloc(n, size);
}

int __wrap_epoll_ctl(int ep, int op, int fd, struct epoll_event *ev) {
	if (fault(F_EPOLL_CTL, "epoll_ctl"))
		return errno = ENOMEM, -1;
	return __real_epoll_ctl(ep, op, fd, ev);
}

/* close_range fails as on a kernel before 5.9. */
int __wrap_close_range(unsigned lo, unsigned hi, int flags) {
	if (fault(F_CLOSE_RANGE, "close_range"))
		return errno = ENOSYS, -1;
	return __real_close_range(lo, hi, flags);
}

int __wrap_kill(pid_t pid, int sig) {
	if (fault(F_KILL, "kill"))
		return errno = EPERM, -1;
	return __real_kill(pid, sig);
}

int __wrap_fsync(int fd) {
	if (fault(F_FSYNC, "fsync"))
		return errno = EIO, -1;
	return __real_fsync(fd);
}

int __wrap_rename(const char *from, const char *to) {
	if (fault(F_RENAME, "rename"))
		return errno = EIO, -1;
	return __real_rename(from, to);
}

ssize_t __wrap_sendmsg(int fd, const struct msghdr *msg, int flags) {
	if (fault(F_SENDMSG, "sendmsg"))
		return errno = ENOBUFS, -1;
	return __real_sendmsg(fd, msg, flags);
}
