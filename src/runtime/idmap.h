/* Each sandbox gets its own unprivileged host uid/gid range, allocated host-wide (shared by every
 * instance on the host) as a slot file under <run>/uids/, released only after the sandbox's
 * processes and files are gone. */
#pragma once

#include <sys/types.h>

#include "../lib/error.h"

#define IDMAP_BASE               0x10000000u /* first host uid handed to sandboxes */
#define IDMAP_RANGE              65536u      /* ids per sandbox: 0..65535 inside */
#define IDMAP_SLOTS              16384u      /* ranges up to IDMAP_BASE + 2^30 */
#define IDMAP_EMPTY_SLOT_GRACE_S 10          /* an empty slot file older than this is abandoned */

struct idmap_slot {
	int slot; /* -1 when none */
	uid_t base;
};

/* Claim a free slot under run_dir/uids for owner ("<instance> <sandbox id>"). */
int idmap_slot_alloc(const char *run_dir, const char *owner, struct idmap_slot *ret,
                     struct sk_error *err);
/* Release a slot; only when its file still names owner (so gc never frees a reused slot). */
int idmap_slot_release(const char *run_dir, int slot, const char *owner);
/* Release every slot naming an owner that starts with "<instance> " and is not in keep(). */
int idmap_slots_gc(const char *run_dir, const char *instance,
                   int (*alive)(const char *sbid, void *), void *ud);
/* Write "0 base count" to /proc/pid/{uid_map,gid_map} (the writer is host root). */
int idmap_write_maps(pid_t pid, uid_t base, unsigned count, struct sk_error *err);
/* The map line written for a range, for tests: "0 <base> <count>\n". */
int idmap_format_line(char *buf, size_t size, uid_t base, unsigned count);
