//go:build ignore

/* podinit.c: the init process of a pod whose containers share one PID
 * namespace. */
#include "monitor.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

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
	close_from(3);
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return "make the mounts private";
	if (mount("pod-init", "/proc", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,nr_inodes=1,mode=0555") < 0)
		return "mount an empty root";
	/* pivot_root, not chroot: the namespace began as a copy of the host's
	 * mounts, and every copy (other pods' network namespaces, container
	 * root file systems) would live as long as the pod, keeping a removed
	 * pod's namespace, and its veth, alive. Detaching the old root drops
	 * them all. */
	if (chdir("/proc") < 0 || syscall(SYS_pivot_root, ".", ".") < 0)
		return "enter the empty root";
	if (umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
		return "detach the host's mounts";
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
void pod_init(void) {
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
