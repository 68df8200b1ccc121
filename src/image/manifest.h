/* Image manifests: what an image holds, file by file, and the operations on them — canonical
 * JSON (its SHA-256 is the image's content digest), ingesting a directory, applying a layer,
 * materializing a read-only tree.
 *
 * Paths are absolute and normalized: "/" is the root directory, then "/bin", "/bin/sh"; no "//",
 * no trailing "/", no "." or ".." component, no NUL, at most IMG_PATH_MAX bytes and
 * IMG_PATH_DEPTH_MAX components. A manifest is
 * sorted by path (byte order) and holds each path once; every path's parent is a directory in
 * it (an image always has "/"). A layer (what one build step changed) may also hold whiteouts
 * and opaque directories. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define IMG_PATH_MAX 4095
/* Components of a path ("/a/b": 2). Deeper trees are refused: removing a tree (gc, a failed
 * build) holds a directory fd per level, and 2,000 levels fit in IMG_PATH_MAX. */
#define IMG_PATH_DEPTH_MAX  256
#define IMG_XATTR_NAME_MAX  255
#define IMG_XATTR_VALUE_MAX 65536

enum img_type {
	IMG_REG,
	IMG_DIR,
	IMG_SYMLINK,
	IMG_CHR,
	IMG_BLK,
	IMG_FIFO,
	IMG_SOCK,
	IMG_WHITEOUT, /* layers only: the path (and what is below it) is removed */
};

struct img_xattr {
	char *name; /* "user.foo", "security.capability", ... */
	unsigned char *value;
	size_t len;
};

struct img_entry {
	char *path;
	enum img_type type;
	uint32_t mode; /* permission bits with suid, sgid, sticky (07777); the type is in type */
	uint32_t uid, gid;
	uint64_t size;     /* IMG_REG: bytes */
	int64_t mtime_sec; /* kept: Python's cached bytecode checks it */
	uint32_t mtime_nsec;
	char digest[IMG_DIGEST_HEX]; /* IMG_REG: the content's digest; "" otherwise */
	char *target;                /* IMG_SYMLINK: the link's text (never followed by skiff) */
	uint32_t rdev_major, rdev_minor; /* IMG_CHR, IMG_BLK */
	int opaque;               /* IMG_DIR in a layer: hides everything below it in the lower */
	struct img_xattr *xattrs; /* sorted by name, unique */
	size_t nxattrs;
};

struct img_manifest {
	struct img_entry *e;
	size_t n, cap;
};

/* What a client-controlled image may hold; a manifest or an import past them is refused. */
struct img_limits {
	uint64_t max_files;       /* entries */
	uint64_t max_bytes;       /* the sum of regular files' sizes */
	uint64_t max_file_bytes;  /* one file */
	uint64_t max_xattr_bytes; /* names and values of one entry */
	/* Paths, link targets and xattrs of all entries together: what an ingest keeps in memory
	 * (hard links share one inode's xattrs on disk, not in the manifest). */
	uint64_t max_meta_bytes;
};
extern const struct img_limits img_default_limits;

void img_manifest_init(struct img_manifest *m);
void img_manifest_free(struct img_manifest *m);
/* A deep copy of e appended (the manifest is unsorted until img_manifest_sort). */
int img_manifest_add(struct img_manifest *m, const struct img_entry *e, struct sk_error *err);
/* Sort by path; -EEXIST (with the path in err) when a path is there twice. */
int img_manifest_sort(struct img_manifest *m, struct sk_error *err);
/* The entry for path in a sorted manifest, or NULL. */
const struct img_entry *img_manifest_find(const struct img_manifest *m, const char *path);
/* Remove entry e (one of m's) from m, keeping the order of the rest. */
void img_manifest_remove(struct img_manifest *m, const struct img_entry *e);
/* Check a sorted manifest: paths normalized and unique, parents directories, fields consistent
 * with the type, within limits; layer set allows whiteouts and opaque directories and
 * does not require parents. Errors are -SK_EINVAL_SPEC naming the first bad entry. */
int img_manifest_check(const struct img_manifest *m, int layer, const struct img_limits *lim,
                       struct sk_error *err);
/* 1 when path is normalized as above. */
int img_path_valid(const char *path);

/* Canonical JSON: the same manifest always gives the same bytes (fixed key order, defaults
 * omitted, sorted entries, xattr values in base64). */
int img_manifest_encode(const struct img_manifest *m, char **ret, size_t *ret_len,
                        struct sk_error *err);
/* Parse and check (img_manifest_check) JSON from an untrusted source. */
int img_manifest_decode(const char *json, size_t len, int layer, const struct img_limits *lim,
                        struct img_manifest *m, struct sk_error *err);
/* Encode and store as a blob; digest is the manifest's. */
int img_manifest_save(struct img_store *s, const struct img_manifest *m,
                      char digest[IMG_DIGEST_HEX], struct sk_error *err);
int img_manifest_load(struct img_store *s, const char *digest, const struct img_limits *lim,
                      struct img_manifest *m, struct sk_error *err);

/* A layer read from the host back to the ids its sandbox saw: every id in [base, base + range)
 * becomes id - base, any other nobody. Owners, and the ids inside extended attributes that hold
 * them: POSIX ACLs (read from the host, they name host ids) and file capabilities (a v3
 * capability's root id; the sandbox's root's becomes a v2 capability, which applies in whatever
 * user namespace runs the image, as an image's own do; one of an id outside the range goes). */
void img_manifest_ids_unmap(struct img_manifest *m, uint32_t base, uint32_t range, uint32_t nobody);

/* Apply layer on top of base, in place: a whiteout removes its path and what is below it, an
 * opaque directory removes what is below it in base, every other entry replaces or adds its
 * path; a path whose parent is missing gets its missing ancestors as directories (0755, root).
 * The result is a sorted image manifest (a directory replaced by a non-directory loses its
 * children). */
int img_manifest_apply(struct img_manifest *base, const struct img_manifest *layer,
                       struct sk_error *err);

/* Ingest the directory tree open as dirfd (never following symlinks, never leaving it): each
 * regular file's bytes into the store, an entry per file into m (sorted). With
 * IMG_INGEST_LAYER the tree is an overlay upper layer mounted with userxattr: character
 * devices 0:0 and files with a user.overlay.whiteout attribute become whiteouts, directories
 * with user.overlay.opaque="y" opaque, and user.overlay.* attributes are not kept. Sockets are
 * skipped. */
#define IMG_INGEST_LAYER 1
int img_ingest_dir(struct img_store *s, int dirfd, int flags, const struct img_limits *lim,
                   struct img_manifest *m, struct sk_error *err);

/* The read-only tree of the manifest stored as digest, made if missing (built aside, renamed
 * into trees/<digest>): every file a hard link to an inode under inodes/ shared by every tree
 * holding the same (digest, mode, owner, mtime, xattrs); an inode's data made by reflink from
 * the blob where the filesystem can (btrfs), else copied; a new inode once a link count
 * reaches its limit. ret_path gets the tree's path. */
int img_materialize(struct img_store *s, const char *digest, char *ret_path, size_t size,
                    struct sk_error *err);
/* Hold a materialized tree while a sandbox (holder: its id) uses it, so that gc and pruning
 * leave it, and release it. Holds are files (trees/<digest>.holds/<holder>): they survive a
 * restart of the process that took them, and taking one twice is harmless. */
int img_tree_hold(struct img_store *s, const char *digest, const char *holder,
                  struct sk_error *err);
void img_tree_release(struct img_store *s, const char *digest, const char *holder);
/* Remove least recently used trees that nothing holds until the store's filesystem has at
 * least free_bytes free or no such tree is left; on_drop (optional) is told each one removed.
 * Returns how many were removed. */
int img_trees_prune(struct img_store *s, uint64_t free_bytes,
                    void (*on_drop)(const char *digest, void *ud), void *ud, struct sk_error *err);
