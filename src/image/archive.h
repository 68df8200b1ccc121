/* Tar archives into the store (libarchive: plain, gzip, zstd, xz, bzip2): a tar as one layer,
 * and OCI image archives (an OCI image layout or `docker save` output) as an image. Archives
 * come from clients: nothing is ever written outside the store, paths are confined to the
 * image, hard links must name a file already in it, device nodes are dropped, and every size
 * is limited (img_limits; compressed bombs and sparse files count their expanded size). */
#pragma once

#include "manifest.h"

/* Whiteouts as OCI layers spell them: ".wh.NAME" removes NAME, ".wh..wh..opq" makes its
 * directory opaque. Without it such names are plain files. */
#define IMG_TAR_WHITEOUTS 1

/* Read the tar open as fd into a layer: each member at dest (an absolute normalized directory
 * path, "/" for the root) joined with its name; regular files' bytes into the store. layer must
 * be initialized (img_manifest_init); what it already holds is the layer so far (hard links may
 * name its files, members replace its entries). On success it holds the result, sorted and
 * checked; on failure it is left as it was. */
int img_layer_from_tar(struct img_store *s, int fd, const char *dest, int flags,
                       const struct img_limits *lim, struct img_manifest *layer,
                       struct sk_error *err);

/* What img_layer_from_tar_stats read, for the caller to log: device nodes and sockets are
 * dropped, not refused, and warning says so ("" when nothing was dropped). */
struct img_tar_stats {
	uint64_t members;         /* every member read, whiteouts and dropped ones included */
	uint64_t bytes;           /* regular files' bytes (hard links count their target's; data
	                           * read past, of whiteouts and pax hard links, counts too) */
	uint64_t devices_dropped; /* character and block devices */
	uint64_t sockets_dropped;
	char warning[128];
};
/* img_layer_from_tar, and what it read into ret_stats (when not NULL; untouched on failure). */
int img_layer_from_tar_stats(struct img_store *s, int fd, const char *dest, int flags,
                             const struct img_limits *lim, struct img_manifest *layer,
                             struct img_tar_stats *ret_stats, struct sk_error *err);

/* What an OCI image's config says about how to run it. */
struct img_config {
	char **env; /* "K=V" */
	size_t nenv;
	char *workdir;
	char **entrypoint;
	size_t nentrypoint;
	char **cmd;
	size_t ncmd;
};
void img_config_free(struct img_config *c);

/* Import the OCI image archive open as fd: its layers applied in order onto an empty image
 * (which gets "/"), into image (sorted, checked); cfg from its config. An archive holding
 * several images is refused. */
int img_oci_import(struct img_store *s, int fd, const struct img_limits *lim,
                   struct img_manifest *image, struct img_config *cfg, struct sk_error *err);
