/* What the store's files share and nothing outside src/image needs. */
#pragma once

#include "manifest.h"

/* "blobs/sha256/" + 2 + "/" + 62 + NUL */
#define IMG_BLOB_RELPATH_BYTES 80

/* The blob's path relative to the store's root. */
void img_blob_relpath(const char *digest, char out[IMG_BLOB_RELPATH_BYTES]);
/* Give the file open as fd (an O_TMPFILE, or any file) the name dirfd/name; -EEXIST when the
 * name is taken (it is never replaced). */
int img_fd_link(int fd, int dirfd, const char *name);

/* Tests lower the link count at which a new inode is started (0: the filesystem's limit). */
extern unsigned long img_inode_max_links;

/* Tests run this as gc or pruning is about to remove the tree of digest, having found it
 * unheld (to take a hold at that moment). */
extern void (*img_tree_remove_hook)(const char *digest);
/* Tests run this as gc is about to remove the blob of digest, having found it old and unkept. */
extern void (*img_blob_remove_hook)(const char *digest);

/* "trees/<digest>" and its companions, relative to the store's root. */
#define IMG_TREES_DIR "trees"
/* A tree being built or removed: trees/.tmp-<random>, flock'ed by whoever works on it. */
#define IMG_TREE_TMP_PREFIX ".tmp-"

/* Mark the tree of digest used now (trees/<digest>.used), for pruning least recently used. */
void img_tree_touch(struct img_store *s, const char *digest);
/* Remove the trees/.tmp-* that nobody works on any more (a builder or gc that died). */
void img_trees_clean_stale(struct img_store *s);
/* True for overlayfs's own attributes (user.overlay.*, trusted.overlay.*): never kept in an
 * image, where the overlay that uses the tree as its lower layer would obey them. */
int img_xattr_is_overlay(const char *name);
/* The key of a regular file's inode (inodes/<2>/<62>[.N]): the SHA-256 of everything a file
 * shares with its inode (content digest, mode, owner, mtime, xattrs). */
int img_inode_key(const struct img_entry *e, char key[IMG_DIGEST_HEX]);
