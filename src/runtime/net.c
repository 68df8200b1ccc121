/* Network namespace setup inside the sandbox (loopback; for network egress, its resolv.conf:
 * the links are src/net's), and sockets made in a running sandbox's network namespace for the
 * host to use. */
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/sock.h"
#include "internal.h"

#define NET_SOCKET_WAIT_MS           2000 /* a forked child's three system calls: past this, stuck */
#define NET_SOCKET_CHILD_STACK_BYTES (64 * 1024)

int net_loopback_up(struct sk_error *err)
{
	_cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return sk_error_errno(err, -errno, "socket");
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, "lo", 3);
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		return sk_error_errno(err, -errno, "get flags of lo");
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
		return sk_error_errno(err, -errno, "bring lo up");
	return 0;
}

/* What the socket child works from and answers with. */
struct socket_child {
	int pidfd; /* the sandbox's init */
	int domain, type, protocol;
	int answer_fd; /* its end of the socket pair: (errno, socket) go back there */
};

/* Join the sandbox's network namespace only: the child stays the host's root in the host's
 * filesystem and pid namespace, runs nothing of the sandbox's and exits at once. */
static int socket_child_main(void *arg)
{
	const struct socket_child *c = arg;
	int e = 0, fd = -1;
	if (setns(c->pidfd, CLONE_NEWNET) < 0)
		e = errno;
	else if ((fd = socket(c->domain, c->type | SOCK_CLOEXEC, c->protocol)) < 0)
		e = errno;
	sock_send_fd(c->answer_fd, &e, sizeof(e), fd);
	_exit(e ? 1 : 0);
}

int rt_sandbox_socket(const struct rt_sandbox *sb, int domain, int type, int protocol, int *ret_fd,
                      struct sk_error *err)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return sk_error_errno(err, -errno, "socketpair");
	_cleanup_close_ int mine = sv[0];
	_cleanup_close_ int theirs = sv[1];
	struct socket_child c = {.pidfd = sb->pidfd,
	                         .domain = domain,
	                         .type = type,
	                         .protocol = protocol,
	                         .answer_fd = theirs};
#if defined(__SANITIZE_ADDRESS__)
	/* ASan keeps per-thread state in TLS, which a clone sharing our memory would share. */
	pid_t pid = fork();
	if (pid == 0)
		socket_child_main(&c);
#else
	/* A fork costs about 1 ms on a VM; a child sharing our memory (and suspending us until it
	 * exits, so its stack can't be in use twice) costs a fraction of that. We resume only once
	 * it has exited, so the poll below bounds nothing here: none of its three calls can block
	 * (setns on a pidfd we hold, socket, one small message into an empty socket pair), and
	 * nothing of the sandbox can stop it (a host process, outside the sandbox's pid namespace
	 * and cgroups). The poll is the bound of the fork path above. */
	static char stack[NET_SOCKET_CHILD_STACK_BYTES] __attribute__((aligned(16)));
	pid_t pid =
	    clone(socket_child_main, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | SIGCHLD, &c);
#endif
	if (pid < 0)
		return sk_error_errno(err, -errno, "start the socket child");
	close(TAKE_FD(theirs));
	int e = EIO, fd = -1;
	struct pollfd p = {.fd = mine, .events = POLLIN};
	int ready = poll(&p, 1, NET_SOCKET_WAIT_MS);
	ssize_t n = ready > 0 ? sock_recv_fd(mine, &e, sizeof(e), &fd) : -ETIMEDOUT;
	if (ready <= 0)
		kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	if (n != (ssize_t)sizeof(e) || e || fd < 0) {
		if (fd >= 0)
			close(fd);
		if (n == -ETIMEDOUT)
			return sk_error_set(err, -ETIMEDOUT,
			                    "make a socket in the sandbox: timed out");
		e = n < 0 ? (int)-n : e ? e : EIO;
		return sk_error_errno(err, -e, "make a socket in the sandbox's network");
	}
	*ret_fd = fd;
	return 0;
}

int rt_sandbox_netns_open(const struct rt_sandbox *sb, int *ret_fd, struct sk_error *err)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)sb->pid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return sk_error_errno(err, -errno, "open %s", path);
	/* Opened while the pidfd's process still runs: the pid was not recycled in between. */
	struct pollfd p = {.fd = sb->pidfd, .events = POLLIN};
	if (sb->pidfd < 0 || poll(&p, 1, 0) != 0)
		return sk_error_set(err, -ESRCH, "the sandbox's init is gone");
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int rt_sandbox_slot(const struct rt_sandbox *sb)
{
	return sb->slot.slot;
}

int net_resolv_conf_write(const char *text, struct sk_error *err)
{
	/* In the sandbox's own root, as its root: a link the image put there goes nowhere outside
	 * it, yet it is replaced rather than followed. */
	struct stat st;
	if (lstat("/etc", &st) < 0 && errno == ENOENT && mkdir("/etc", 0755) < 0)
		return sk_error_errno(err, -errno, "make /etc");
	if (unlink("/etc/resolv.conf") < 0 && errno != ENOENT)
		return sk_error_errno(err, -errno, "replace /etc/resolv.conf");
	_cleanup_close_ int fd =
	    open("/etc/resolv.conf", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return sk_error_errno(err, -errno, "write /etc/resolv.conf");
	size_t len = strlen(text);
	if (write(fd, text, len) != (ssize_t)len)
		return sk_error_errno(err, -EIO, "write /etc/resolv.conf");
	return 0;
}

/* One nfnetlink message: header, nfgenmsg, optionally one string attribute. */
static size_t nfnl_put(char *buf, uint16_t type, uint16_t flags, uint32_t seq, uint8_t family,
                       uint16_t res_id, uint16_t attr, const char *str)
{
	struct nlmsghdr *h = (struct nlmsghdr *)buf;
	struct nfgenmsg *g = (struct nfgenmsg *)(h + 1);
	memset(h, 0, NLMSG_SPACE(sizeof(*g)));
	h->nlmsg_type = type;
	h->nlmsg_flags = NLM_F_REQUEST | flags;
	h->nlmsg_seq = seq;
	g->nfgen_family = family;
	g->version = NFNETLINK_V0;
	g->res_id = htons(res_id);
	size_t len = NLMSG_SPACE(sizeof(*g));
	if (str) {
		struct nlattr *a = (struct nlattr *)(buf + len);
		size_t n = strlen(str) + 1;
		a->nla_type = attr;
		a->nla_len = (uint16_t)(NLA_HDRLEN + n);
		memcpy(a + 1, str, n);
		memset((char *)(a + 1) + n, 0, NLA_ALIGN(a->nla_len) - a->nla_len);
		len += NLA_ALIGN(a->nla_len);
	}
	h->nlmsg_len = (uint32_t)len;
	return len;
}

/* One request about the instance's table (inet skiff_<instance>) and the kernel's first answer:
 * its type (*ret_type) and, for an error or acknowledgement, its code (*ret_error). A change
 * (NFT_MSG_DELTABLE) goes in a batch, as nf_tables wants; a query alone. Bounded: three small
 * messages out, one read back within NET_SOCKET_WAIT_MS. */
static int table_request(const struct rt *rt, uint16_t msg, int *ret_type, int *ret_error)
{
	char name[32];
	snprintf(name, sizeof(name), "skiff_%s", rt->instance);
	_cleanup_close_ int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
	if (fd < 0)
		return -errno;
	char buf[256] __attribute__((aligned(4)));
	uint32_t seq = (uint32_t)getpid();
	int batch = msg == NFT_MSG_DELTABLE;
	size_t len = 0;
	if (batch)
		len += nfnl_put(buf, NFNL_MSG_BATCH_BEGIN, 0, seq, AF_UNSPEC, NFNL_SUBSYS_NFTABLES,
		                0, NULL);
	len += nfnl_put(buf + len, (NFNL_SUBSYS_NFTABLES << 8) | msg, NLM_F_ACK, seq + 1,
	                NFPROTO_INET, 0, NFTA_TABLE_NAME, name);
	if (batch)
		len += nfnl_put(buf + len, NFNL_MSG_BATCH_END, 0, seq + 2, AF_UNSPEC,
		                NFNL_SUBSYS_NFTABLES, 0, NULL);
	struct sockaddr_nl to = {.nl_family = AF_NETLINK};
	if (sendto(fd, buf, len, 0, (struct sockaddr *)&to, sizeof(to)) < 0)
		return -errno;
	struct pollfd p = {.fd = fd, .events = POLLIN};
	if (poll(&p, 1, NET_SOCKET_WAIT_MS) <= 0)
		return -ETIMEDOUT;
	char ans[1024] __attribute__((aligned(4)));
	ssize_t n = recv(fd, ans, sizeof(ans), MSG_TRUNC);
	const struct nlmsghdr *h = (const struct nlmsghdr *)ans;
	if (n < (ssize_t)NLMSG_HDRLEN || n > (ssize_t)sizeof(ans) || !NLMSG_OK(h, (size_t)n) ||
	    h->nlmsg_seq != seq + 1)
		return -EIO;
	*ret_type = h->nlmsg_type;
	*ret_error = 0;
	if (h->nlmsg_type == NLMSG_ERROR) {
		if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr)))
			return -EIO;
		*ret_error = ((const struct nlmsgerr *)NLMSG_DATA(h))->error;
	}
	return 0;
}

int rt_net_table_remove(const struct rt *rt)
{
	int type, e;
	int r = table_request(rt, NFT_MSG_DELTABLE, &type, &e);
	if (r < 0)
		return r;
	if (type != NLMSG_ERROR)
		return -EIO;
	return e == -ENOENT ? 0 : e;
}

int rt_net_table_exists(const struct rt *rt)
{
	int type, e;
	int r = table_request(rt, NFT_MSG_GETTABLE, &type, &e);
	if (r < 0)
		return r;
	if (type == ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE))
		return 1;
	if (type != NLMSG_ERROR)
		return -EIO;
	return e == -ENOENT ? 0 : e < 0 ? e : -EIO;
}
