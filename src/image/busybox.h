/* The default image until the image store exists: a root filesystem made from the host's static
 * busybox (Debian's busybox-static), built once per data directory. */
#pragma once

#include <stddef.h>

#include "../lib/error.h"

#define BUSYBOX_HOST_PATH "/bin/busybox"
/* Where the binaries take another static busybox from (a host without busybox-static). */
#define BUSYBOX_PATH_ENV "SKIFF_BUSYBOX"

/* Make <data_dir>/rootfs/busybox if it is missing (atomically: built aside, then renamed) from the
 * static busybox at host_busybox (NULL: BUSYBOX_HOST_PATH) and write its path into ret_path. */
int image_busybox_ensure(const char *data_dir, const char *host_busybox, char *ret_path,
                         size_t size, struct sk_error *err);
