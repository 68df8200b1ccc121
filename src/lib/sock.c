#include "sock.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

union fd_control {
	struct cmsghdr h;
	char buf[CMSG_SPACE(sizeof(int) * SOCK_MAX_FDS)];
};

/* One sendmsg() of len bytes with the n fds attached: the bytes sent (the fds went with the
 * first), or -errno. */
static ssize_t send_part_fds(int sock, const void *buf, size_t len, const int *fds, size_t n)
{
	if (n > SOCK_MAX_FDS)
		return -EINVAL;
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	union fd_control ctl;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	if (n > 0) {
		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * n);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * n);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
	}
	ssize_t r;
	do {
		r = sendmsg(sock, &msg, MSG_NOSIGNAL);
	} while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}

int sock_send_fds(int sock, const void *buf, size_t len, const int *fds, size_t n)
{
	ssize_t r = send_part_fds(sock, buf, len, fds, n);
	return r < 0 ? (int)r : 0;
}

ssize_t sock_send_part_fd(int sock, const void *buf, size_t len, int pass_fd)
{
	return send_part_fds(sock, buf, len, &pass_fd, pass_fd >= 0 ? 1 : 0);
}

ssize_t sock_recv_fds(int sock, void *buf, size_t size, int *ret_fds, size_t max)
{
	union fd_control ctl;
	struct iovec iov = {.iov_base = buf, .iov_len = size};
	struct msghdr msg = {.msg_iov = &iov,
	                     .msg_iovlen = 1,
	                     .msg_control = ctl.buf,
	                     .msg_controllen = sizeof(ctl.buf)};
	for (size_t i = 0; ret_fds && i < max; i++)
		ret_fds[i] = -1;
	ssize_t n;
	do {
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	size_t got = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (ret_fds && got < max)
				ret_fds[got++] = fd;
			else
				close(fd);
		}
	}
	return n;
}

int sock_send_fd(int sock, const void *buf, size_t len, int pass_fd)
{
	return sock_send_fds(sock, buf, len, &pass_fd, pass_fd >= 0 ? 1 : 0);
}

ssize_t sock_recv_fd(int sock, void *buf, size_t size, int *ret_fd)
{
	int fd;
	ssize_t n = sock_recv_fds(sock, buf, size, &fd, 1);
	if (ret_fd)
		*ret_fd = n >= 0 ? fd : -1;
	else if (n >= 0 && fd >= 0)
		close(fd);
	return n;
}
