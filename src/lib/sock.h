/* One message, and at most one passed fd, over a SOCK_SEQPACKET (or any unix) socket. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Send len bytes of buf with pass_fd attached (-1: none); 0 or -errno. No SIGPIPE. */
int sock_send_fd(int sock, const void *buf, size_t len, int pass_fd);
/* One sendmsg() of the same, on a stream socket that may take part of it (or none: -EAGAIN
 * when non-blocking): returns the bytes sent (pass_fd went with the first) or -errno. */
ssize_t sock_send_part_fd(int sock, const void *buf, size_t len, int pass_fd);
/* Receive one message into buf (size bytes); *ret_fd (if not NULL) gets a passed fd or -1,
 * and any further fds are closed. Returns the bytes received (0 at EOF) or -errno. */
ssize_t sock_recv_fd(int sock, void *buf, size_t size, int *ret_fd);
