/* One message, and a few passed fds, over a SOCK_SEQPACKET (or any unix) socket. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

#define SOCK_MAX_FDS 5 /* fds passed with one message */

/* Send len bytes of buf with the n fds attached (at most SOCK_MAX_FDS); 0 or -errno. No
 * SIGPIPE. */
int sock_send_fds(int sock, const void *buf, size_t len, const int *fds, size_t n);
/* Receive one message into buf (size bytes); ret_fds (if not NULL) gets up to max passed fds,
 * -1 in the slots left, and any further fds are closed. Returns the bytes received (0 at EOF)
 * or -errno. */
ssize_t sock_recv_fds(int sock, void *buf, size_t size, int *ret_fds, size_t max);
/* The same with one fd (pass_fd -1: none). */
int sock_send_fd(int sock, const void *buf, size_t len, int pass_fd);
/* One sendmsg() of the same, on a stream socket that may take part of it (or none: -EAGAIN
 * when non-blocking): returns the bytes sent (pass_fd went with the first) or -errno. */
ssize_t sock_send_part_fd(int sock, const void *buf, size_t len, int pass_fd);
ssize_t sock_recv_fd(int sock, void *buf, size_t size, int *ret_fd);
