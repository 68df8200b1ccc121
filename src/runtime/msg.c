/* The messages between the runtime and a sandbox's init: a fixed head, a short text, and at most
 * one passed fd, as one SOCK_SEQPACKET packet. Also linked into skiff-init. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "../lib/sock.h"
#include "internal.h"

int rt_msg_send(int fd, int type, int code, const char *text, int pass_fd)
{
	struct rt_msg m = {.type = type, .code = code};
	snprintf(m.text, sizeof(m.text), "%s", text ? text : "");
	return sock_send_fd(fd, &m, offsetof(struct rt_msg, text) + strlen(m.text) + 1, pass_fd);
}

ssize_t rt_msg_recv(int fd, struct rt_msg *m, int *ret_fd)
{
	memset(m, 0, sizeof(*m));
	ssize_t n = sock_recv_fd(fd, m, sizeof(*m), ret_fd);
	if (n > 0 && (size_t)n < offsetof(struct rt_msg, text))
		return -EBADMSG;
	m->text[sizeof(m->text) - 1] = '\0';
	return n;
}
