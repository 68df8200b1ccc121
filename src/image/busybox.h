/* The default image until the image store exists: a root filesystem made from the host's static
 * busybox (Debian's busybox-static), built once per data directory. */
#pragma once

#include <stddef.h>

#include "../lib/error.h"

#define BUSYBOX_HOST_PATH "/bin/busybox"

/* Make <data_dir>/rootfs/busybox if it is missing (atomically: built aside, then renamed) and
 * write its path into ret_path. */
int image_busybox_ensure(const char *data_dir, char *ret_path, size_t size, struct sk_error *err);
