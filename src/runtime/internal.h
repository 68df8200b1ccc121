/* Shared between the runtime's parent side (sandbox.c) and the code that runs in the sandbox's
 * namespaces (child.c, rootfs.c). Not part of the public API. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "runtime.h"

/* Messages on the SOCK_SEQPACKET pair between the runtime and the sandbox's init. */
enum rt_msg_type {
	RT_MSG_GO = 1, /* runtime → init: ids mapped, cgroups joined; carries the lower mount fd */
	RT_MSG_STARTED,    /* init → runtime: the command was exec'd */
	RT_MSG_ERROR,      /* init → runtime: setup failed; code is -errno, text says where */
	RT_MSG_EXIT,       /* init → runtime: code is the main command's wait status */
	RT_MSG_EXEC_ERROR, /* init → runtime: the command could not be exec'd (not found, …) */
};

struct rt_msg {
	int32_t type;
	int32_t code;
	char text[SK_ERROR_MSG_BYTES];
};

/* What the sandbox's init needs; it lives in the cloned copy of the parent's memory. */
struct rt_child_args {
	const struct rt *rt;
	const struct spec *spec;
	const char *scratch; /* host directory to build the root in (a private tmpfs over it) */
	const char *hostname;
	int sync_fd;
	int parent_fd; /* the runtime's end, closed in the child */
};

/* Body of the cloned child: becomes the sandbox's pid 1. Never returns. */
_Noreturn void rt_child_main(const struct rt_child_args *a);

/* In the child, after the mount namespace is private: build the root under scratch from the
 * idmapped lower mount fd and pivot into it. */
struct timing;
int rootfs_setup(const char *scratch, int lower_fd, const struct spec *spec, struct timing *t,
                 struct sk_error *err);

/* Bring loopback up in the current network namespace. */
int net_loopback_up(struct sk_error *err);

int rt_msg_send(int fd, int type, int code, const char *text, int pass_fd);
/* Receive one message; *ret_fd gets a passed fd or -1. Returns bytes, 0 on EOF, -errno. */
ssize_t rt_msg_recv(int fd, struct rt_msg *m, int *ret_fd);

/* State directory layout: <inst_dir>/<id>/ holds "lock" (flock held while the owner lives). */
int state_sandbox_dir_create(const struct rt *rt, const char *id, int *ret_lock_fd,
                             struct sk_error *err);
int state_sandbox_dir_remove(const char *inst_dir, const char *id);
/* The owner is gone when the lock can be taken. */
int state_sandbox_is_alive(const struct rt *rt, const char *id);
