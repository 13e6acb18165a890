//go:build ignore

/*
 * main.c: pier-shim-monitor's command line, start-up and event loop. What
 * the program is and does: monitor.h.
 */
#include "monitor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <signal.h>
#include <unistd.h>

static int arg_fd(const char *v) {
	char *end;
	long fd = strtol(v, &end, 10);
	return *v && !*end && fd >= 0 && fd <= 1 << 30 ? (int)fd : -1;
}

static void parse_time(const char *v, struct timespec *t) {
	char *end;
	t->tv_sec = strtol(v, &end, 10);
	t->tv_nsec = *end == '.' ? strtol(end + 1, NULL, 10) : 0;
	if (t->tv_nsec < 0 || t->tv_nsec >= 1000000000)
		t->tv_nsec = 0;
}

/* parse_args reads the key=value command line into m; unknown keys are
 * ignored (runtime-name=, runtime=, runtime-root= and
 * runtime-systemd-cgroup= of older pier-shims too). */
static int parse_args(struct monitor *m, int argc, char **argv) {
	m->id = m->dir = m->sock_path = m->log_path = m->log_dir = m->log_name = m->oom_file = m->helper = "";
	for (int i = 2; i < argc; i++) {
		/* key=value, left as it is: ps shows the command line */
		const char *arg = argv[i], *v = strchr(arg, '=');
		if (!v)
			continue;
		size_t kl = v - arg;
		v++;
#define KEY(k) (kl == sizeof(k) - 1 && !memcmp(arg, k, kl))
		if (KEY("id")) m->id = v;
		else if (KEY("dir")) m->dir = v;
		else if (KEY("socket")) m->sock_path = v;
		else if (KEY("log")) m->log_path = v;
		else if (KEY("log-dir")) m->log_dir = v;
		else if (KEY("log-name")) m->log_name = v;
		else if (KEY("oom")) m->oom_file = v;
		else if (KEY("oom-base")) m->oom_base = atol(v);
		else if (KEY("helper")) m->helper = v;
		else if (KEY("pid")) m->init_pid = atoi(v);
		else if (KEY("created")) parse_time(v, &m->created_at);
		else if (KEY("tty")) m->tty = atoi(v);
		else if (KEY("stdin-once")) m->stdin_once = atoi(v);
		else if (KEY("pty-stdin")) m->pty_stdin = atoi(v);
		else if (KEY("listen-fd")) m->listen_fd = arg_fd(v);
		else if (KEY("log-fd")) m->log_fd = arg_fd(v);
		else if (KEY("stdin-fd")) m->stdin_fd = arg_fd(v);
		else if (KEY("stdout-fd")) m->outs[0].fd = arg_fd(v);
		else if (KEY("stderr-fd")) m->outs[1].fd = arg_fd(v);
		else if (KEY("pty-fd")) m->pty_fd = arg_fd(v);
#undef KEY
	}
	if (!*m->id || !*m->dir || m->init_pid <= 0 || m->listen_fd < 0 || !*m->helper)
		return -1;
	if (*m->log_path && (!*m->log_dir || !*m->log_name)) {
		/* The older form, log= alone: beneath the log's own directory. */
		const char *slash = strrchr(m->log_path, '/');
		if (slash && slash != m->log_path) {
			if ((size_t)(slash - m->log_path) >= sizeof m->log_dir_buf)
				return -1;
			memcpy(m->log_dir_buf, m->log_path, slash - m->log_path);
			m->log_dir = m->log_dir_buf;
		} else {
			m->log_dir = "/";
		}
		m->log_name = slash ? slash + 1 : m->log_path;
	}
	return 0;
}

/* on_term kills the container's init (and with it its PID namespace) on
 * SIGTERM; the loop ends once the exit is recorded. A created container
 * that never started ends the same way. */
static void on_term(struct monitor *m) {
	if (m->terminating)
		return;
	m->terminating = 1;
	shimlog("SIGTERM: killing container %s and exiting once its exit is recorded", m->id);
	/* our child, unreaped: the pid is still its */
	if (!m->init_reaped && kill(m->init_pid, SIGKILL) < 0)
		shimlog("kill the init (pid %d): %s", m->init_pid, strerror(errno));
}

/* start_up takes the descriptors over and sets up the loop; a failure is
 * logged and ends the monitor. */
static int start_up(struct monitor *m) {
	prctl(PR_SET_NAME, "pier-shim");
	/* Descriptors: as many as allowed (exec restored the soft limit); its
	 * children get the inherited limit back. */
	if (getrlimit(RLIMIT_NOFILE, &m->nofile_inherited) == 0 && m->nofile_inherited.rlim_cur < m->nofile_inherited.rlim_max) {
		struct rlimit raised = {m->nofile_inherited.rlim_max, m->nofile_inherited.rlim_max};
		m->nofile_raised = setrlimit(RLIMIT_NOFILE, &raised) == 0;
	}
	/* It is the container's subreaper already (the flag survives exec). */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	signal(SIGPIPE, SIG_IGN);
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGCHLD);
	sigaddset(&sigs, SIGTERM);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	m->sigfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	m->ep = epoll_create1(EPOLL_CLOEXEC);
	if (m->sigfd < 0 || m->ep < 0) {
		shimlog("signalfd/epoll: %s", strerror(errno));
		return -1;
	}
	if (ep_ctl(m, EPOLL_CTL_ADD, m->sigfd, EPOLLIN, T_SIG, "signals") < 0)
		return -1;
	if (set_flags(m->listen_fd, 1) < 0) {
		shimlog("the listener (fd %d): %s", m->listen_fd, strerror(errno));
		return -1;
	}
	if (ep_ctl(m, EPOLL_CTL_ADD, m->listen_fd, EPOLLIN, T_LISTEN, "listener") < 0)
		return -1;
	if (m->log_fd >= 0) {
		if (set_flags(m->log_fd, 0) < 0)
			shimlog("the log (fd %d): %s", m->log_fd, strerror(errno));
	} else if (reopen_log(m) < 0) {
		shimlog("open the log %s beneath %s: %s; the output is not logged until a reopen works", m->log_name, m->log_dir, strerror(errno));
	}
	if (m->stdin_fd >= 0 && set_flags(m->stdin_fd, 0) < 0) /* blocking: attachers share it */
		shimlog("stdin (fd %d): %s", m->stdin_fd, strerror(errno));
	if (m->tty)
		m->outs[0].fd = m->pty_fd, m->outs[0].split.crlf = 1;
	for (int i = 0; i < 2; i++) {
		struct output *o = &m->outs[i];
		if (o->fd < 0)
			continue;
		if (set_flags(o->fd, 1) < 0) {
			shimlog("%s (fd %d): %s", o->name, o->fd, strerror(errno));
			return -1;
		}
		if (ep_ctl(m, EPOLL_CTL_ADD, o->fd, EPOLLIN, T_OUT0 + i, o->name) < 0)
			return -1;
	}
	/* memory.events (cgroup v2) notifies a change; memory.oom_control (v1)
	 * never does, and stays until the runtime's delete: no watch (each
	 * takes one of root's inotify instances). Without the watch, the
	 * count is read at the exit only. */
	int watch = *m->oom_file && !strstr(m->oom_file, "memory.oom_control");
	if (watch && (m->oom_watch = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) >= 0) {
		if (inotify_add_watch(m->oom_watch, m->oom_file, IN_MODIFY) < 0 || ep_ctl(m, EPOLL_CTL_ADD, m->oom_watch, EPOLLIN, T_OOM, "oom") < 0) {
			close(m->oom_watch);
			m->oom_watch = -1;
		}
	} else if (watch) {
		/* EMFILE: fs.inotify.max_user_instances (128 on Debian) is
		 * used up by root's processes, one per container here. */
		shimlog("cannot watch %s (%s): OOM kills are read at the exit only; raise fs.inotify.max_user_instances", m->oom_file, strerror(errno));
	}
	return 0;
}

/* next_timeout is the epoll timeout until the next deadline, or -1. */
static int next_timeout(struct monitor *m) {
	long timeout = conns_timeout(m);
	if (m->init_reaped && m->status != ST_EXITED) {
		long t = ms_until(m->drain_deadline);
		if (timeout < 0 || t < timeout)
			timeout = t;
	}
	if (m->accept_paused) {
		long t = ms_until(m->accept_at);
		if (timeout < 0 || t < timeout)
			timeout = t;
	}
	return (int)timeout;
}

static void on_event(struct monitor *m, struct epoll_event *ev) {
	uint64_t tag = ev->data.u64;
	if (tag == T_SIG) {
		struct signalfd_siginfo si;
		ssize_t r;
		while ((r = read(m->sigfd, &si, sizeof si)) > 0 || (r < 0 && errno == EINTR))
			if (r > 0 && si.ssi_signo == SIGTERM)
				on_term(m);
		reap(m);
	} else if (tag == T_OOM) {
		char ib[4096];
		ssize_t r;
		while ((r = read(m->oom_watch, ib, sizeof ib)) > 0 || (r < 0 && errno == EINTR))
			;
		note_oom_kills(m);
	} else if (tag == T_LISTEN) {
		if (!m->deleted && !m->accept_paused)
			on_accept(m);
	} else if (tag == T_OUT0 || tag == T_OUT1) {
		int k = tag - T_OUT0;
		if (m->outs[k].fd >= 0)
			read_output(m, k);
	} else {
		on_conn(m, ev->data.ptr, ev->events);
	}
}

static int run(struct monitor *m) {
	/* The init may have ended before the exec. */
	reap(m);
	while (!m->quit) {
		struct epoll_event evs[16];
		int n = epoll_wait(m->ep, evs, 16, next_timeout(m));
		if (n < 0 && errno != EINTR) {
			shimlog("epoll_wait: %s", strerror(errno));
			return 1;
		}
		for (int i = 0; i < n && !m->quit; i++)
			on_event(m, &evs[i]);
		sweep_conns(m);
		if (m->quit)
			break;
		if (m->init_reaped && m->status != ST_EXITED && ((m->outs[0].fd < 0 && m->outs[1].fd < 0) || ms_until(m->drain_deadline) == 0))
			finish_exit(m);
		if (m->terminating && m->status == ST_EXITED)
			break;
		if (m->accept_paused && !m->deleted && ms_until(m->accept_at) == 0) {
			if (ep_ctl(m, EPOLL_CTL_ADD, m->listen_fd, EPOLLIN, T_LISTEN, "listener") == 0)
				m->accept_paused = 0, m->accept_told = 0;
			else
				m->accept_at = after(ACCEPT_PAUSE_MS);
		}
		conns_tick(m);
		sweep_conns(m);
	}
	return 0;
}

/* The one monitor; everything else gets it as a pointer. */
static struct monitor the_monitor;

/* The Makefile passes its VERSION. */
#ifndef PIER_VERSION
#define PIER_VERSION "dev"
#endif

int main(int argc, char **argv) {
	if (argc == 2 && !strcmp(argv[1], "--version")) {
		printf("pier-shim-monitor %s\n", PIER_VERSION);
		return fflush(stdout) ? 1 : 0;
	}
	if (argc == 3 && !strcmp(argv[1], "pod-init"))
		pod_init();
	if (argc < 2 || strcmp(argv[1], "monitor")) {
		fprintf(stderr, "pier-shim-monitor is run by pier-shim, which pierd starts: one per container\n");
		return 2;
	}
	struct monitor *m = &the_monitor;
	m->listen_fd = m->log_fd = m->stdin_fd = m->pty_fd = m->oom_watch = m->ep = m->sigfd = -1;
	m->oom_base = m->oom_seen = -1;
	for (int i = 0; i < 2; i++) {
		struct output *o = &m->outs[i];
		o->m = m, o->fd = -1, o->name = i ? FD_STDERR : FD_STDOUT;
		o->split.buf = m->out_buf[i];
	}
	if (parse_args(m, argc, argv) < 0) {
		fprintf(stderr, "pier-shim-monitor: incomplete command line\n");
		return 2;
	}
	m->status = ST_CREATED;
	if (start_up(m) < 0)
		return 1;
	int rc = run(m);
	flush_outputs(m);
	if (m->log_fd >= 0)
		close(m->log_fd);
	if (rc == 0)
		shimlog(m->terminating ? "container %s: exit recorded after SIGTERM, exiting" : "container %s deleted, exiting", m->id);
	return rc;
}
