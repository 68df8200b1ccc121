/* The content store: each file's bytes stored once, named by their SHA-256, under one root
 * directory (a data directory's images/):
 *   blobs/sha256/<2 hex>/<62 hex>   immutable, read-only files; manifests are blobs too
 *   tmp/                            blobs being written (renamed into blobs/ once hashed)
 *   inodes/                         materialized files, one per distinct (digest, metadata)
 *   trees/<manifest digest>/        materialized images: read-only trees of hard links
 * Digests are 64 lowercase hex digits, without a "sha256:" prefix (the API adds it). */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "../lib/error.h"
#include "../lib/hash.h"

#define IMG_DIGEST_HEX SHA256_HEX_BYTES /* 64 hex digits + NUL */

struct img_store {
	int root_fd; /* the root directory, open (O_PATH is not enough: fstatfs, syncfs) */
	char root[4096];
};

/* Open (creating what is missing) the store at root. */
int img_store_open(struct img_store *s, const char *root, struct sk_error *err);
void img_store_close(struct img_store *s);

/* True when hex is 64 lowercase hex digits. */
int img_digest_valid(const char *hex);

/* Writing a blob whose size is not known ahead (an upload streamed from a socket): bytes go to a
 * file under tmp/ and are hashed as they come; finish renames it into place (idempotent: a blob
 * already stored is kept, the new copy dropped). */
struct img_blob_writer;
int img_blob_begin(struct img_store *s, uint64_t max_bytes, struct img_blob_writer **ret,
                   struct sk_error *err);
/* -EFBIG once more than max_bytes were written (the writer must still be aborted). */
int img_blob_write(struct img_blob_writer *w, const void *buf, size_t len, struct sk_error *err);
/* Store what was written. With expect (a digest) set, bytes that hash to anything else are
 * dropped and -EBADMSG returned. Frees w whatever happens. */
int img_blob_finish(struct img_blob_writer *w, const char *expect, char digest[IMG_DIGEST_HEX],
                    uint64_t *ret_size, struct sk_error *err);
/* Drop what was written; frees w (NULL is fine). */
void img_blob_abort(struct img_blob_writer *w);

/* Store len bytes of buf. */
int img_blob_put(struct img_store *s, const void *buf, size_t len, char digest[IMG_DIGEST_HEX],
                 struct sk_error *err);
/* Store what fd holds from its offset to its end: -EFBIG past max_bytes. */
int img_blob_put_fd(struct img_store *s, int fd, uint64_t max_bytes, char digest[IMG_DIGEST_HEX],
                    uint64_t *ret_size, struct sk_error *err);
/* 1 when the blob is stored, 0 when not. */
int img_blob_exists(struct img_store *s, const char *digest);
/* The size of a stored blob (one fstatat, nothing opened); -ENOENT when it isn't stored. */
int img_blob_size(struct img_store *s, const char *digest, uint64_t *ret_size);
/* Open the blob for reading (O_RDONLY | O_CLOEXEC); -ENOENT when it isn't stored. */
int img_blob_open(struct img_store *s, const char *digest, int *ret_fd, uint64_t *ret_size,
                  struct sk_error *err);
/* Read a whole blob of at most max bytes into a fresh buffer (NUL-terminated, not counted in
 * *ret_len); -EFBIG when larger. */
int img_blob_read(struct img_store *s, const char *digest, size_t max, char **ret, size_t *ret_len,
                  struct sk_error *err);

struct img_gc_stats {
	uint64_t blobs_removed, blob_bytes_removed;
	uint64_t trees_removed, inodes_removed;
};

/* Remove every blob that is neither a live manifest (live: manifest digests) nor referenced by
 * one, and that is older than grace_s (an upload for a build that has not started yet is
 * referenced by nothing); every materialized tree that is not of a live manifest and not held
 * (img_tree_hold); every inode no tree links to any more. */
int img_store_gc(struct img_store *s, const char *const *live, size_t nlive, time_t grace_s,
                 struct img_gc_stats *stats, struct sk_error *err);
