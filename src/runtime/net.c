/* Network namespace setup inside the sandbox (network "none": loopback only), and sockets made
 * in a running sandbox's network namespace for the host to use. */
#include <errno.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/sock.h"
#include "internal.h"

#define NET_SOCKET_WAIT_MS 2000 /* the child does three system calls; past this it is stuck */

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

int rt_sandbox_socket(const struct rt_sandbox *sb, int domain, int type, int *ret_fd,
                      struct sk_error *err)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return sk_error_errno(err, -errno, "socketpair");
	_cleanup_close_ int mine = sv[0];
	pid_t pid = fork();
	if (pid < 0) {
		close(sv[1]);
		return sk_error_errno(err, -errno, "fork");
	}
	if (pid == 0) {
		/* The network namespace only: the child stays the host's root in the host's
		 * filesystem and pid namespace, runs nothing of the sandbox's and exits at once. */
		int e = 0, fd = -1;
		if (setns(sb->pidfd, CLONE_NEWNET) < 0)
			e = errno;
		else if ((fd = socket(domain, type | SOCK_CLOEXEC, 0)) < 0)
			e = errno;
		sock_send_fd(sv[1], &e, sizeof(e), fd);
		_exit(e ? 1 : 0);
	}
	close(sv[1]);
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
