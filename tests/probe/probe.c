/* skiff-probe: a static program the integration and escape tests run inside sandboxes. Each
 * subcommand tries one thing and prints "ok" or "err <ERRNO-NAME>" (or a value), exit 0; a
 * crash or a kill is the test's to see. Usage: probe NAME [ARG…] */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static const char *errname(int e)
{
	switch (e) {
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case ESRCH: return "ESRCH";
	case EACCES: return "EACCES";
	case EINVAL: return "EINVAL";
	case ENOSYS: return "ENOSYS";
	case EBADF: return "EBADF";
	case EFAULT: return "EFAULT";
	case EAGAIN: return "EAGAIN";
	case ENOMEM: return "ENOMEM";
	case EEXIST: return "EEXIST";
	case EROFS: return "EROFS";
	case ENOSPC: return "ENOSPC";
	case EDQUOT: return "EDQUOT";
	case EMFILE: return "EMFILE";
	case ENFILE: return "ENFILE";
	case ENOTTY: return "ENOTTY";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case EBUSY: return "EBUSY";
	case ENXIO: return "ENXIO";
	case ENODEV: return "ENODEV";
	case ECONNREFUSED: return "ECONNREFUSED";
	case ENETUNREACH: return "ENETUNREACH";
	case EHOSTUNREACH: return "EHOSTUNREACH";
	case EXDEV: return "EXDEV";
	default: return "EOTHER";
	}
}

static int report(long r)
{
	if (r < 0)
		printf("err %s\n", errname(errno));
	else
		printf("ok\n");
	return 0;
}

static void *thread_fn(void *arg)
{
	return arg;
}

static long try_clone_flags(unsigned long flags)
{
	long pid = syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, 0);
	if (pid == 0)
		_exit(0);
	if (pid > 0)
		waitpid((pid_t)pid, NULL, 0);
	return pid;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: probe NAME [ARG...]\n");
		return 2;
	}
	const char *t = argv[1];
	const char *a = argc > 2 ? argv[2] : "";
	char buf[256];
	if (!strcmp(t, "mount"))
		return report(mount("none", "/tmp", "tmpfs", 0, NULL));
	if (!strcmp(t, "remount-root"))
		return report(mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND, NULL));
	if (!strcmp(t, "umount-proc-sys"))
		return report(umount2("/proc/sys", MNT_DETACH));
	if (!strcmp(t, "unshare-user"))
		return report(unshare(CLONE_NEWUSER));
	if (!strcmp(t, "unshare-net"))
		return report(unshare(CLONE_NEWNET));
	if (!strcmp(t, "unshare-mount"))
		return report(unshare(CLONE_NEWNS));
	if (!strcmp(t, "clone-newuser"))
		return report(try_clone_flags(CLONE_NEWUSER));
	if (!strcmp(t, "clone-newpid"))
		return report(try_clone_flags(CLONE_NEWPID));
	if (!strcmp(t, "clone3"))
		return report(syscall(SYS_clone3, NULL, 0));
	if (!strcmp(t, "setns")) {
		int fd = open("/proc/self/ns/net", O_RDONLY);
		return report(setns(fd, 0));
	}
	if (!strcmp(t, "thread")) {
		pthread_t th;
		int e = pthread_create(&th, NULL, thread_fn, NULL);
		if (e) {
			errno = e;
			return report(-1);
		}
		pthread_join(th, NULL);
		return report(0);
	}
	if (!strcmp(t, "io_uring"))
		return report(syscall(SYS_io_uring_setup, 1, buf));
	if (!strcmp(t, "keyctl"))
		return report(syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
	if (!strcmp(t, "add_key"))
		return report(syscall(SYS_add_key, "user", "skiff", "x", 1, KEY_SPEC_SESSION_KEYRING));
	if (!strcmp(t, "bpf")) {
		union bpf_attr attr;
		memset(&attr, 0, sizeof(attr));
		attr.map_type = BPF_MAP_TYPE_ARRAY;
		attr.key_size = 4;
		attr.value_size = 4;
		attr.max_entries = 1;
		return report(syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof(attr)));
	}
	if (!strcmp(t, "perf_event_open")) {
		struct perf_event_attr pe;
		memset(&pe, 0, sizeof(pe));
		pe.size = sizeof(pe);
		pe.type = PERF_TYPE_SOFTWARE;
		pe.config = PERF_COUNT_SW_CPU_CLOCK;
		return report(syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0));
	}
	if (!strcmp(t, "ptrace-attach"))
		return report(ptrace(PTRACE_ATTACH, atoi(a), NULL, NULL));
	if (!strcmp(t, "ptrace-traceme"))
		return report(ptrace(PTRACE_TRACEME, 0, NULL, NULL));
	if (!strcmp(t, "process_vm_readv")) {
		struct iovec l = {buf, 8}, r = {buf, 8};
		return report(process_vm_readv(atoi(a), &l, 1, &r, 1, 0));
	}
	if (!strcmp(t, "open_by_handle_at")) {
		struct file_handle *fh = malloc(sizeof(*fh) + 128);
		fh->handle_bytes = 8;
		fh->handle_type = 1;
		memset(fh->f_handle, 0, 8);
		return report(syscall(SYS_open_by_handle_at, AT_FDCWD, fh, O_RDONLY));
	}
	if (!strcmp(t, "name_to_handle_at")) {
		struct file_handle *fh = malloc(sizeof(*fh) + 128);
		fh->handle_bytes = 128;
		int mnt;
		return report(syscall(SYS_name_to_handle_at, AT_FDCWD, "/", fh, &mnt, 0));
	}
	if (!strcmp(t, "mknod-char"))
		return report(mknod("/tmp/probe-null", S_IFCHR | 0666, makedev(1, 3)));
	if (!strcmp(t, "mknod-block"))
		return report(mknod("/tmp/probe-sda", S_IFBLK | 0666, makedev(8, 0)));
	if (!strcmp(t, "kexec_load"))
		return report(syscall(SYS_kexec_load, 0, 0, NULL, 0));
	if (!strcmp(t, "init_module"))
		return report(syscall(SYS_init_module, buf, 0, ""));
	if (!strcmp(t, "finit_module"))
		return report(syscall(SYS_finit_module, 0, "", 0));
	if (!strcmp(t, "delete_module"))
		return report(syscall(SYS_delete_module, "loop", 0));
	if (!strcmp(t, "reboot"))
		return report(syscall(SYS_reboot, 0xfee1dead, 672274793, 0x1234567, NULL)); /* CAD off */
	if (!strcmp(t, "swapon"))
		return report(syscall(SYS_swapon, "/tmp/none", 0));
	if (!strcmp(t, "pivot_root"))
		return report(syscall(SYS_pivot_root, "/tmp", "/tmp"));
	if (!strcmp(t, "chroot"))
		return report(chroot("/tmp"));
	if (!strcmp(t, "userfaultfd"))
		return report(syscall(SYS_userfaultfd, 0));
	if (!strcmp(t, "syslog"))
		return report(syscall(SYS_syslog, 3, buf, sizeof(buf)));
	if (!strcmp(t, "acct"))
		return report(syscall(SYS_acct, NULL));
	if (!strcmp(t, "settimeofday"))
		return report(syscall(SYS_settimeofday, NULL, NULL));
	if (!strcmp(t, "clock_settime")) {
		struct timespec ts = {0, 0};
		return report(syscall(SYS_clock_settime, CLOCK_REALTIME, &ts));
	}
	if (!strcmp(t, "fsopen"))
		return report(syscall(SYS_fsopen, "tmpfs", 0));
	if (!strcmp(t, "open_tree"))
		return report(syscall(SYS_open_tree, AT_FDCWD, "/", 1 /* OPEN_TREE_CLONE */));
	if (!strcmp(t, "move_mount"))
		return report(syscall(SYS_move_mount, -1, "", AT_FDCWD, "/tmp", 4));
	if (!strcmp(t, "tiocsti")) {
		char c = 'x';
		return report(ioctl(0, TIOCSTI, &c));
	}
	if (!strcmp(t, "sethostname"))
		return report(sethostname("evil", 4));
	if (!strcmp(t, "kill"))
		return report(kill(atoi(a), argc > 3 ? atoi(argv[3]) : 0));
	if (!strcmp(t, "setuid-host")) /* become a uid outside the sandbox's range */
		return report(setuid(70000));
	if (!strcmp(t, "write")) /* write ARG (a path) with one byte */ {
		int fd = open(a, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0)
			return report(-1);
		return report(write(fd, "x", 1));
	}
	if (!strcmp(t, "read")) {
		int fd = open(a, O_RDONLY);
		if (fd < 0)
			return report(-1);
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0)
			return report(-1);
		printf("ok %zd\n", n);
		return 0;
	}
	if (!strcmp(t, "fds")) /* count of open fds besides 0, 1, 2 and the one listing them */ {
		int n = 0;
		for (int fd = 3; fd < 65536; fd++)
			if (fcntl(fd, F_GETFD) >= 0)
				n++;
		printf("%d\n", n);
		return 0;
	}
	if (!strcmp(t, "fill-fds")) {
		int n = 0;
		while (open("/dev/null", O_RDONLY) >= 0)
			n++;
		printf("%d %s\n", n, errname(errno));
		return 0;
	}
	if (!strcmp(t, "memory")) /* touch ARG MiB */ {
		size_t mib = strtoul(a, NULL, 10);
		for (size_t i = 0; i < mib; i++) {
			char *p = malloc(1 << 20);
			if (!p)
				return report(-1);
			memset(p, 1, 1 << 20);
		}
		return report(0);
	}
	if (!strcmp(t, "socket-netlink"))
		return report(socket(AF_NETLINK, SOCK_RAW, 0));
	if (!strcmp(t, "connect")) /* connect ADDR PORT (IPv4) */ {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
		inet_pton(AF_INET, a, &sa.sin_addr);
		return report(connect(s, (struct sockaddr *)&sa, sizeof(sa)));
	}
	fprintf(stderr, "probe: unknown test %s\n", t);
	return 2;
}
