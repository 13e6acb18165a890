//go:build ignore

/* exit.c: reaping the container's init, its OOM kills, exit.json. */
#include "monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* read_oom_kills reads the oom_kill count of the OOM counter file
 * (memory.events, or memory.oom_control of cgroup v1), or -1. */
static long read_oom_kills(struct monitor *m) {
	if (!*m->oom_file)
		return -1;
	char b[4096];
	if (read_small_file(m->oom_file, b, sizeof b) < 0)
		return -1;
	for (char *l = b; l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (!strncmp(l, "oom_kill ", 9))
			return strtol(l + 9, NULL, 10);
	return -1;
}

/* note_oom_kills records the count of OOM kills as it is now. */
void note_oom_kills(struct monitor *m) {
	long k = read_oom_kills(m);
	if (k > m->oom_seen)
		m->oom_seen = k;
}

/* reap reaps every child that has exited; the init's exit starts the
 * drain of its output. */
void reap(struct monitor *m) {
	for (;;) {
		int ws;
		pid_t pid = waitpid(-1, &ws, WNOHANG);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid <= 0)
			return;
		if (pid != m->init_pid || m->init_reaped)
			continue;
		m->init_reaped = 1;
		m->finished_at = now();
		if (WIFSIGNALED(ws)) {
			m->exit_signal = WTERMSIG(ws);
			m->exit_code = 128 + m->exit_signal;
		} else {
			m->exit_code = WEXITSTATUS(ws);
		}
		note_oom_kills(m);
		m->oom_killed = m->oom_seen > 0 && m->oom_seen > m->oom_base;
		m->drain_deadline = after(LOG_DRAIN_MS);
	}
}

/* bexit appends the init's exit as a JSON object (an Exit; with the
 * protocol version first, as exit.json holds it). */
void bexit(struct monitor *m, struct buf *b, int with_version) {
	jopen(b);
	if (with_version)
		jint(b, FIELD_V, PROTO_VERSION);
	jint(b, FIELD_EXIT_CODE, m->exit_code);
	if (m->exit_signal)
		jint(b, FIELD_SIGNAL, m->exit_signal);
	if (m->oom_killed)
		jtrue(b, FIELD_OOM_KILLED);
	jtime(b, FIELD_FINISHED_AT, m->finished_at);
	jclose(b);
}

/* write_exit_file writes exit.json atomically: whole, or not at all (the
 * failure logged). */
static int write_exit_file(struct monitor *m) {
	char path[PATH_BUF], tmp[PATH_BUF], rec[512];
	if (snprintf(path, sizeof path, "%s/" FILE_EXIT, m->dir) >= (int)sizeof path || snprintf(tmp, sizeof tmp, "%s/" FILE_EXIT_TMP, m->dir) >= (int)sizeof tmp) {
		shimlog("write the exit file: the directory's path is too long");
		return -1;
	}
	struct buf b = BUF(rec);
	bexit(m, &b, 1);
	bput(&b, "\n", 1);
	if (b.failed) {
		shimlog("write the exit file: the record does not fit in %zu bytes", sizeof rec);
		return -1;
	}
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600); /* a record: root's alone */
	if (fd < 0) {
		shimlog("write the exit file: %s: %s", tmp, strerror(errno));
		return -1;
	}
	int ok = write_all(fd, b.p, b.n) == 0 && fsync(fd) == 0;
	int e = errno;
	if (close(fd) < 0 && ok)
		ok = 0, e = errno;
	if (ok && rename(tmp, path) < 0)
		ok = 0, e = errno;
	if (!ok) {
		shimlog("write the exit file %s: %s", path, strerror(e));
		if (unlink(tmp) < 0 && errno != ENOENT)
			shimlog("remove %s: %s", tmp, strerror(errno));
		return -1;
	}
	int d = open(m->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d < 0 || fsync(d) < 0)
		shimlog("sync the directory %s: %s", m->dir, strerror(errno));
	if (d >= 0)
		close(d);
	return 0;
}

/* finish_exit records the init's exit once the output has ended (or the
 * drain has timed out): exit.json first, then the answers. */
void finish_exit(struct monitor *m) {
	write_exit_file(m);
	m->status = ST_EXITED;
	shimlog("container %s exited: code %d, signal %d, oom killed %s", m->id, m->exit_code, m->exit_signal, m->oom_killed ? "true" : "false");
	conns_exited(m);
}
