/* skiff-probe: a static program the integration and escape tests run inside sandboxes. Each
 * subcommand tries one thing and prints "ok" or "err <ERRNO-NAME>" (or a value), exit 0; a
 * crash or a kill is the test's to see. Usage: probe NAME [ARG…] */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/btrfs.h>
#include <linux/fs.h>
#include <linux/keyctl.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <linux/perf_event.h>
#include <linux/sched.h>
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
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sys/xattr.h>
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
	case ETXTBSY: return "ETXTBSY";
	case ENOTDIR: return "ENOTDIR";
	case EISDIR: return "EISDIR";
	case ELOOP: return "ELOOP";
	case ENETDOWN: return "ENETDOWN";
	case ETIMEDOUT: return "ETIMEDOUT";
	case E2BIG: return "E2BIG";
	case ENOTEMPTY: return "ENOTEMPTY";
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

static const struct {
	const char *name;
	unsigned long flag;
} NAMESPACES[] = {
    {"user", CLONE_NEWUSER},     {"mnt", CLONE_NEWNS},    {"pid", CLONE_NEWPID},
    {"net", CLONE_NEWNET},       {"uts", CLONE_NEWUTS},   {"ipc", CLONE_NEWIPC},
    {"cgroup", CLONE_NEWCGROUP}, {"time", CLONE_NEWTIME},
};

/* The CLONE_NEW* flag of a namespace's name (as in /proc/self/ns), or 0. */
static unsigned long ns_flag(const char *name)
{
	for (size_t i = 0; i < sizeof(NAMESPACES) / sizeof(NAMESPACES[0]); i++)
		if (!strcmp(NAMESPACES[i].name, name))
			return NAMESPACES[i].flag;
	fprintf(stderr, "probe: unknown namespace %s\n", name);
	exit(2);
}

static const char *file_type(mode_t m)
{
	return S_ISREG(m)    ? "reg"
	       : S_ISDIR(m)  ? "dir"
	       : S_ISLNK(m)  ? "lnk"
	       : S_ISCHR(m)  ? "chr"
	       : S_ISBLK(m)  ? "blk"
	       : S_ISFIFO(m) ? "fifo"
	                     : "sock";
}

/* Climb out of a chroot the classic way: keep a directory fd from outside, chroot below it,
 * fchdir back out, climb .. and chroot there. Then test whether target is reachable. */
static int chroot_escape(const char *target)
{
	mkdir("/tmp/jail", 0755);
	int outside = open("/", O_RDONLY | O_DIRECTORY);
	if (outside < 0 || chroot("/tmp/jail") < 0 || fchdir(outside) < 0)
		return report(-1);
	for (int i = 0; i < 64; i++)
		if (chdir("..") < 0)
			return report(-1);
	if (chroot(".") < 0)
		return report(-1);
	return report(access(target, F_OK));
}

/* A 32-bit (int 0x80) system call from a 64-bit process: seccomp must check the architecture. */
static long int80(long nr, long arg)
{
#if defined(__x86_64__)
	long ret;
	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(arg) : "memory");
	if (ret < 0 && ret > -4096) {
		errno = (int)-ret;
		return -1;
	}
	return ret;
#else
	(void)nr;
	(void)arg;
	errno = ENOSYS;
	return -1;
#endif
}

/* Ask nf_tables for its tables: the kernel answers with an ack whose error says whether we may
 * use it (nf_tables bugs are a common way out of containers; all need CAP_NET_ADMIN). */
static int nftables_list(void)
{
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
	if (fd < 0)
		return report(-1);
	struct {
		struct nlmsghdr nh;
		struct nfgenmsg nf;
	} req = {
	    .nh = {.nlmsg_len = sizeof(req),
	           .nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
	           .nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP,
	           .nlmsg_seq = 1},
	    .nf = {.nfgen_family = AF_UNSPEC, .version = NFNETLINK_V0},
	};
	if (send(fd, &req, sizeof(req), 0) < 0)
		return report(-1);
	char reply[8192];
	ssize_t n = recv(fd, reply, sizeof(reply), 0);
	if (n < 0)
		return report(-1);
	struct nlmsghdr *nh = (struct nlmsghdr *)reply;
	if (n >= (ssize_t)NLMSG_LENGTH(sizeof(struct nlmsgerr)) && nh->nlmsg_type == NLMSG_ERROR) {
		struct nlmsgerr *e = NLMSG_DATA(nh);
		if (e->error < 0) {
			errno = -e->error;
			return report(-1);
		}
	}
	return report(0);
}

/* One UDP datagram from src to dst:port with a forged source address, through a raw socket
 * (CAP_NET_RAW, which sandboxes keep in their user namespace). "ok" says it left the socket,
 * nothing about where it arrived. */
static int spoof_udp(const char *src, const char *dst, int port)
{
	struct {
		unsigned char ver_ihl, tos;
		uint16_t len, id, frag;
		unsigned char ttl, proto;
		uint16_t csum;
		uint32_t saddr, daddr;
		uint16_t sport, dport, ulen, ucsum;
		char data[8];
	} __attribute__((packed)) pkt = {0};
	pkt.ver_ihl = 0x45;
	pkt.len = htons(sizeof(pkt));
	pkt.ttl = 64;
	pkt.proto = IPPROTO_UDP;
	if (inet_pton(AF_INET, src, &pkt.saddr) != 1 || inet_pton(AF_INET, dst, &pkt.daddr) != 1)
		return report(-1);
	pkt.sport = htons(4242);
	pkt.dport = htons((uint16_t)port);
	pkt.ulen = htons(8 + sizeof(pkt.data));
	memcpy(pkt.data, "spoofed", 8);
	int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW); /* IP_HDRINCL implied; the kernel sums */
	if (fd < 0)
		return report(-1);
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = pkt.daddr};
	return report(sendto(fd, &pkt, sizeof(pkt), 0, (struct sockaddr *)&to, sizeof(to)));
}

/* A btrfs ioctl on directory dir with a name (subvolume create, snapshot of dir itself). */
static int btrfs_vol(const char *what, const char *dir, const char *name)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return report(-1);
	if (!strcmp(what, "snap")) {
		struct btrfs_ioctl_vol_args_v2 a;
		memset(&a, 0, sizeof(a));
		a.fd = fd;
		snprintf(a.name, sizeof(a.name), "%s", name);
		return report(ioctl(fd, BTRFS_IOC_SNAP_CREATE_V2, &a));
	}
	struct btrfs_ioctl_vol_args a;
	memset(&a, 0, sizeof(a));
	snprintf(a.name, sizeof(a.name), "%s", name);
	return report(ioctl(fd, BTRFS_IOC_SUBVOL_CREATE, &a));
}

/* Make files (empty, or with n xattrs of size bytes each) in dir until one fails: prints how
 * many and why. What metadata alone costs the writable layer. */
static int fill_meta(const char *dir, long max, int xattrs, int size)
{
	static char val[65536];
	memset(val, 'x', sizeof(val));
	long n = 0;
	for (; n < max; n++) {
		char path[4096], key[64];
		snprintf(path, sizeof(path), "%s/f%ld", dir, n);
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		if (fd < 0)
			break;
		close(fd);
		int i = 0;
		for (; i < xattrs; i++) {
			snprintf(key, sizeof(key), "user.k%d", i);
			if (setxattr(path, key, val, (size_t)size, 0) < 0)
				break;
		}
		if (i < xattrs)
			break;
	}
	printf("%ld %s\n", n, n < max ? errname(errno) : "ok");
	return 0;
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
	if (!strcmp(t, "spoof-udp") && argc == 5) /* spoof-udp SRC DST PORT */
		return spoof_udp(argv[2], argv[3], atoi(argv[4]));
	if (!strcmp(t, "personality")) /* personality HEX */
		return report(syscall(SYS_personality, (unsigned long)strtoul(a, NULL, 16)));
	if (!strcmp(t, "btrfs-subvol") && argc == 4) /* btrfs-subvol DIR NAME */
		return btrfs_vol("subvol", argv[2], argv[3]);
	if (!strcmp(t, "btrfs-snap") && argc == 4) /* btrfs-snap DIR NAME: a snapshot of DIR */
		return btrfs_vol("snap", argv[2], argv[3]);
	if (!strcmp(t, "ficlone") && argc == 4) /* ficlone SRC DST: a reflink copy */ {
		int src = open(argv[2], O_RDONLY);
		int dst = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (src < 0 || dst < 0)
			return report(-1);
		return report(ioctl(dst, FICLONE, src));
	}
	if (!strcmp(t, "fallocate") && argc == 4) /* fallocate PATH MIB */ {
		int fd = open(argv[2], O_WRONLY | O_CREAT, 0600);
		if (fd < 0)
			return report(-1);
		return report(fallocate(fd, 0, 0, (off_t)atol(argv[3]) << 20));
	}
	if (!strcmp(t, "fill-files") && argc >= 4) /* fill-files DIR MAX [XATTRS SIZE] */
		return fill_meta(argv[2], atol(argv[3]), argc > 4 ? atoi(argv[4]) : 0,
		                 argc > 5 ? atoi(argv[5]) : 0);
	if (!strcmp(t, "fill-shm")) /* fill /dev/shm until the write fails or we are killed */ {
		static char chunk[1 << 16];
		int fd = open("/dev/shm/fill", O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0)
			return report(-1);
		while (write(fd, chunk, sizeof(chunk)) > 0)
			;
		return report(-1);
	}
	if (!strcmp(t, "vsock"))
		return report(socket(40 /* AF_VSOCK */, SOCK_STREAM, 0));
	if (!strcmp(t, "vsock-high-bits")) /* the family with bits the kernel truncates away */
		return report(syscall(SYS_socket, 0x100000028UL, SOCK_STREAM, 0));
	if (!strcmp(t, "syscall-nr")) /* a raw call by number, no arguments */
		return report(syscall(strtol(a, NULL, 10), 0, 0, 0, 0, 0, 0));
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
		return report(
		    syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
	if (!strcmp(t, "add_key"))
		return report(
		    syscall(SYS_add_key, "user", "skiff", "x", 1, KEY_SPEC_SESSION_KEYRING));
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
	if (!strcmp(t, "process_vm_writev")) /* writes to an address unmapped in the target */ {
		struct iovec l = {buf, 8}, r = {(void *)8, 8};
		return report(process_vm_writev(atoi(a), &l, 1, &r, 1, 0));
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
		return report(
		    syscall(SYS_reboot, 0xfee1dead, 672274793, 0x1234567, NULL)); /* CAD off */
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
	/* open-wr PATH: open for writing, without creating or truncating; nothing is written */
	if (!strcmp(t, "open-wr"))
		return report(open(a, O_WRONLY));
	/* write-str PATH STR: write STR into the existing file PATH */
	if (!strcmp(t, "write-str")) {
		int fd = open(a, O_WRONLY);
		if (fd < 0)
			return report(-1);
		const char *str = argc > 3 ? argv[3] : "";
		return report(write(fd, str, strlen(str)));
	}
	if (!strcmp(t, "readlink")) {
		ssize_t n = readlink(a, buf, sizeof(buf) - 1);
		if (n < 0)
			return report(-1);
		buf[n] = '\0';
		printf("ok %s\n", buf);
		return 0;
	}
	if (!strcmp(t, "stat")) /* type and device number of ARG (not following a last link) */ {
		struct stat st;
		if (lstat(a, &st) < 0)
			return report(-1);
		printf("ok %s %u:%u\n", file_type(st.st_mode), major(st.st_rdev),
		       minor(st.st_rdev));
		return 0;
	}
	if (!strcmp(t, "ls")) /* number of entries in directory ARG besides . and .. */ {
		DIR *d = opendir(a);
		if (!d)
			return report(-1);
		int n = 0;
		struct dirent *de;
		while ((de = readdir(d)))
			n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
		printf("ok %d\n", n);
		return 0;
	}
	if (!strcmp(t, "mount-fs")) /* mount-fs TYPE DIR [DATA] */
		return report(
		    mount(a, argc > 3 ? argv[3] : "/tmp", a, 0, argc > 4 ? argv[4] : NULL));
	if (!strcmp(t, "bind")) /* bind SRC DST */
		return report(mount(a, argc > 3 ? argv[3] : "/tmp", NULL, MS_BIND, NULL));
	if (!strcmp(t, "umount"))
		return report(umount2(a, MNT_DETACH));
	if (!strcmp(t, "remount")) /* remount PATH ro|rw */
		return report(mount(NULL, a, NULL,
		                    MS_REMOUNT | MS_BIND |
		                        (argc > 3 && !strcmp(argv[3], "ro") ? MS_RDONLY : 0),
		                    NULL));
	if (!strcmp(t, "unshare")) /* unshare NS (a name as in /proc/self/ns) */
		return report(unshare(ns_flag(a)));
	if (!strcmp(t, "clone")) /* clone NS: a child in a new namespace */
		return report(try_clone_flags(ns_flag(a)));
	if (!strcmp(t, "clone3-ns")) /* clone3 NS: a child in a new namespace, through clone3 */ {
		struct clone_args ca;
		memset(&ca, 0, sizeof(ca));
		ca.flags = ns_flag(a);
		ca.exit_signal = SIGCHLD;
		long pid = syscall(SYS_clone3, &ca, sizeof(ca));
		if (pid == 0)
			_exit(0);
		if (pid > 0)
			waitpid((pid_t)pid, NULL, 0);
		return report(pid);
	}
	if (!strcmp(t, "setns-ns")) /* setns-ns NS: enter (our own) namespace NS again */ {
		snprintf(buf, sizeof(buf), "/proc/self/ns/%s", a);
		int fd = open(buf, O_RDONLY);
		if (fd < 0)
			return report(-1);
		return report(setns(fd, ns_flag(a)));
	}
	/* chroot-escape PATH: is PATH reachable after the climb? */
	if (!strcmp(t, "chroot-escape"))
		return chroot_escape(a);
	/* pidfd-getfd PID FD: take a copy of another process's fd */
	if (!strcmp(t, "pidfd-getfd")) {
		int pfd = (int)syscall(SYS_pidfd_open, atoi(a), 0);
		if (pfd < 0)
			return report(-1);
		return report(syscall(SYS_pidfd_getfd, pfd, argc > 3 ? atoi(argv[3]) : 0, 0));
	}
	if (!strcmp(t, "request_key"))
		return report(
		    syscall(SYS_request_key, "user", "skiff", NULL, KEY_SPEC_SESSION_KEYRING));
	if (!strcmp(t, "x32")) /* x32 ABI call: unshare(CLONE_NEWUSER) with the x32 bit set */
		return report(syscall(0x40000000 | SYS_unshare, CLONE_NEWUSER));
	if (!strcmp(t, "int80")) /* int80 NR [ARG]: a 32-bit system call */
		return report(int80(atol(a), argc > 3 ? strtol(argv[3], NULL, 0) : 0));
	if (!strcmp(t, "fork-bomb")) /* fork until it fails; the children wait to be killed */ {
		int n = 0;
		for (;;) {
			pid_t p = fork();
			if (p == 0) {
				pause();
				_exit(0);
			}
			if (p < 0)
				break;
			n++;
		}
		printf("%d %s\n", n, errname(errno));
		return 0;
	}
	if (!strcmp(t, "nftables"))
		return nftables_list();
	if (!strcmp(t, "lo-down")) /* take the loopback interface down */ {
		int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		struct ifreq ifr;
		memset(&ifr, 0, sizeof(ifr));
		memcpy(ifr.ifr_name, "lo", 3);
		if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
			return report(-1);
		ifr.ifr_flags &= ~IFF_UP;
		return report(ioctl(fd, SIOCSIFFLAGS, &ifr));
	}
	fprintf(stderr, "probe: unknown test %s\n", t);
	return 2;
}
