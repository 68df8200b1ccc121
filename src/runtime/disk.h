/* Writable layers on btrfs (disk.c): one subvolume per sandbox, limited by a qgroup. Not part of
 * the public API (runtime.h has rt_disk_setup). */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "../lib/error.h"

struct rt;
struct rt_disk;

/* Make the subvolume <disk>/<instance>/<id>, owned by owner (the sandbox's mapped root), limited
 * to limit_bytes; *ret_fd gets it open (a directory, close-on-exec). */
int disk_subvol_make(const struct rt_disk *d, const char *id, uid_t owner, uint64_t limit_bytes,
                     int *ret_fd, struct sk_error *err);
/* Change the limit of the subvolume open as fd (a pooled sandbox taken for another disk_mib). */
int disk_subvol_limit(int fd, uint64_t limit_bytes, struct sk_error *err);
/* A detached clone of the subvolume's mount, for the sandbox's init to mount as its scratch. */
int disk_upper_mount(int subvol_fd, int *ret_fd, struct sk_error *err);
/* Destroy the subvolume id under the instance directory inst_fd and its qgroup. Allocates
 * nothing (the cleanup helper calls it). -ENOENT when there is none. */
int disk_subvol_remove(int inst_fd, const char *id);
/* Remove the subvolumes of the instance whose sandbox is not alive (alive(id, ud) says).
 * Returns how many. */
int disk_gc(const struct rt_disk *d, int (*alive)(const char *id, void *ud), void *ud);
/* When no runtime of any instance uses the data directory's disk and it holds no subvolume:
 * unmount it (its loop device goes with it). Drops this runtime's hold either way. */
void disk_remove_if_idle(struct rt_disk *d, const char *instance);
/* The same for the disk holding inst_disk (<data>/disk/<instance>) when it isn't rt's own. */
void disk_remove_if_idle_at(const struct rt *rt, const char *inst_disk);
void disk_release(struct rt_disk *d);
