/* Keeping the store's size in check: holds on the trees that sandboxes use, pruning the least
 * recently used trees when the disk fills, and collecting blobs, trees and inodes that nothing
 * refers to. Removal is ordered so that a concurrent materialization never loses a file it has
 * linked: inodes go only once no tree links to them, trees are renamed aside before removal. */
#include "manifest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "../lib/fsutil.h"
#include "../lib/map.h"
#include "store_internal.h"

/* A .tmp- tree younger than this may be one whose builder has not locked it yet. */
#define TREE_TMP_STALE_S 60
#define HOLDER_MAX       128

/* A directory of the store, for readdir; NULL with errno set when it cannot be opened. */
static DIR *store_opendir(int at, const char *rel)
{
	int fd = openat(at, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d && fd >= 0) {
		int saved = errno;
		close(fd);
		errno = saved;
	}
	return d;
}

static int holder_valid(const char *h)
{
	size_t n = h ? strlen(h) : 0;
	if (n == 0 || n > HOLDER_MAX || h[0] == '.')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((h[i] >= 'a' && h[i] <= 'z') || (h[i] >= 'A' && h[i] <= 'Z') ||
		      (h[i] >= '0' && h[i] <= '9') || h[i] == '-' || h[i] == '_' || h[i] == '.'))
			return 0;
	return 1;
}

int img_tree_hold(struct img_store *s, const char *digest, const char *holder, struct sk_error *err)
{
	if (!img_digest_valid(digest) || !holder_valid(holder))
		return sk_error_set(err, -SK_EINVAL_SPEC, "hold tree: invalid digest or holder");
	char dir[IMG_DIGEST_HEX + 32], file[IMG_DIGEST_HEX + HOLDER_MAX + 40];
	snprintf(dir, sizeof(dir), IMG_TREES_DIR "/%s.holds", digest);
	snprintf(file, sizeof(file), "%s/%s", dir, holder);
	/* A release emptying the directory at the same time may remove it: try again. */
	for (int attempt = 0;; attempt++) {
		if (mkdirat(s->root_fd, dir, 0700) < 0 && errno != EEXIST)
			return sk_error_errno(err, -errno, "hold tree %s", digest);
		int fd =
		    openat(s->root_fd, file, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd >= 0) {
			close(fd);
			break;
		}
		if (errno != ENOENT || attempt == 3)
			return sk_error_errno(err, -errno, "hold tree %s", digest);
	}
	img_tree_touch(s, digest);
	return 0;
}

void img_tree_release(struct img_store *s, const char *digest, const char *holder)
{
	if (!img_digest_valid(digest) || !holder_valid(holder))
		return;
	char dir[IMG_DIGEST_HEX + 32], file[IMG_DIGEST_HEX + HOLDER_MAX + 40];
	snprintf(dir, sizeof(dir), IMG_TREES_DIR "/%s.holds", digest);
	snprintf(file, sizeof(file), "%s/%s", dir, holder);
	unlinkat(s->root_fd, file, 0);
	unlinkat(s->root_fd, dir, AT_REMOVEDIR); /* fails while others hold it */
	img_tree_touch(s, digest);
}

static int tree_held(struct img_store *s, const char *digest)
{
	char dir[IMG_DIGEST_HEX + 32];
	snprintf(dir, sizeof(dir), IMG_TREES_DIR "/%s.holds", digest);
	int fd = openat(s->root_fd, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return 0;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return 1;
	}
	int held = 0;
	struct dirent *de;
	while (!held && (de = readdir(d)))
		held = strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
	closedir(d);
	return held;
}

/* Names in trees/ that are trees: 64 hex digits, directories. */
static int is_tree(int trees_fd, const char *name)
{
	struct stat st;
	return img_digest_valid(name) && fstatat(trees_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	       S_ISDIR(st.st_mode);
}

void (*img_tree_remove_hook)(const char *digest);

/* Rename the tree aside first, so that a removal cut short never leaves a partial tree under
 * its digest's name; then remove it and its stamp. -EBUSY when it was held meanwhile.
 *
 * The caller found the tree unheld, but a sandbox may take its hold right after that look (a
 * sandbox holds, then checks the tree is there, then mounts it), so the holds are looked at
 * again once the tree is out of its name: a hold taken before that second look gets its tree
 * back; one taken after it finds the name empty and materializes the tree anew. */
static int tree_remove(struct img_store *s, const char *digest)
{
	char hex[17], from[IMG_DIGEST_HEX + 32], to[64];
	int r = random_hex(8, hex, sizeof(hex));
	if (r < 0)
		return r;
	snprintf(from, sizeof(from), IMG_TREES_DIR "/%s", digest);
	snprintf(to, sizeof(to), IMG_TREES_DIR "/" IMG_TREE_TMP_PREFIX "gc-%s", hex);
	if (img_tree_remove_hook)
		img_tree_remove_hook(digest);
	if (renameat2(s->root_fd, from, s->root_fd, to, RENAME_NOREPLACE) < 0)
		return -errno;
	_cleanup_close_ int fd =
	    openat(s->root_fd, to, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0)
		flock(fd, LOCK_EX);
	/* Put back unless a new build took the name meanwhile (then ours is a spare copy). */
	if (tree_held(s, digest) &&
	    renameat2(s->root_fd, to, s->root_fd, from, RENAME_NOREPLACE) == 0)
		return -EBUSY;
	r = fs_rm_rf_at(s->root_fd, to);
	snprintf(from, sizeof(from), IMG_TREES_DIR "/%s.used", digest);
	unlinkat(s->root_fd, from, 0);
	return r;
}

void img_trees_clean_stale(struct img_store *s)
{
	DIR *d = store_opendir(s->root_fd, IMG_TREES_DIR);
	if (!d)
		return;
	time_t now = time(NULL);
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, IMG_TREE_TMP_PREFIX, strlen(IMG_TREE_TMP_PREFIX)) != 0)
			continue;
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    st.st_ctime > now - TREE_TMP_STALE_S)
			continue;
		_cleanup_close_ int fd =
		    openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0)
			fs_rm_rf_at(dirfd(d), de->d_name);
	}
	closedir(d);
}

/* Call fn on every file two levels down (blobs/sha256/<2>/<62>, inodes/<2>/<rest>). */
static int walk2(int root_fd, const char *top,
                 int (*fn)(int dfd, const char *prefix, const char *name, void *ctx), void *ctx)
{
	DIR *d = store_opendir(root_fd, top);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d))) {
		if (de->d_name[0] == '.' || strlen(de->d_name) != 2)
			continue;
		int sfd =
		    openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		DIR *sd = sfd >= 0 ? fdopendir(sfd) : NULL;
		if (!sd) {
			if (sfd >= 0)
				close(sfd);
			continue;
		}
		struct dirent *se;
		while (r == 0 && (se = readdir(sd)))
			if (se->d_name[0] != '.')
				r = fn(dirfd(sd), de->d_name, se->d_name, ctx);
		closedir(sd);
	}
	closedir(d);
	return r;
}

static int inode_sweep_one(int dfd, const char *prefix, const char *name, void *ctx)
{
	(void)prefix;
	uint64_t *removed = ctx;
	struct stat st;
	/* One link: only inodes/ has it, no tree does. */
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
	    st.st_nlink == 1 && unlinkat(dfd, name, 0) == 0)
		(*removed)++;
	return 0;
}

static uint64_t inodes_sweep(struct img_store *s)
{
	uint64_t removed = 0;
	walk2(s->root_fd, "inodes", inode_sweep_one, &removed);
	return removed;
}

/* After the tree of digest was removed: the inodes of its files that no tree links to any
 * more, found from its manifest rather than by a walk of every inode (pruning removes trees one
 * by one while the disk is short). Without the manifest, every inode is looked at. */
static void tree_inodes_sweep(struct img_store *s, const char *digest)
{
	struct img_manifest m;
	img_manifest_init(&m);
	struct sk_error ignored = {0};
	if (img_manifest_load(s, digest, &img_default_limits, &m, &ignored) < 0) {
		inodes_sweep(s);
		return;
	}
	for (size_t i = 0; i < m.n; i++) {
		char key[IMG_DIGEST_HEX], rel[96];
		if (m.e[i].type != IMG_REG || img_inode_key(&m.e[i], key) < 0)
			continue;
		for (int copy = 0;; copy++) {
			if (copy == 0)
				snprintf(rel, sizeof(rel), "inodes/%.2s/%s", key, key + 2);
			else
				snprintf(rel, sizeof(rel), "inodes/%.2s/%s.%d", key, key + 2, copy);
			struct stat st;
			if (fstatat(s->root_fd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0)
				break;
			if (S_ISREG(st.st_mode) && st.st_nlink == 1)
				unlinkat(s->root_fd, rel, 0);
		}
	}
	img_manifest_free(&m);
}

struct tree_lru {
	char digest[IMG_DIGEST_HEX];
	struct timespec used;
};

static int lru_cmp(const void *a, const void *b)
{
	const struct timespec *x = &((const struct tree_lru *)a)->used;
	const struct timespec *y = &((const struct tree_lru *)b)->used;
	if (x->tv_sec != y->tv_sec)
		return x->tv_sec < y->tv_sec ? -1 : 1;
	return x->tv_nsec < y->tv_nsec ? -1 : x->tv_nsec > y->tv_nsec;
}

/* The trees nothing holds, least recently used first. */
static int trees_unheld(struct img_store *s, struct tree_lru **ret, size_t *ret_n)
{
	DIR *d = store_opendir(s->root_fd, IMG_TREES_DIR);
	if (!d)
		return -errno;
	struct tree_lru *v = NULL;
	size_t n = 0, cap = 0;
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!is_tree(dirfd(d), de->d_name) || tree_held(s, de->d_name))
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 16;
			struct tree_lru *nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				r = -ENOMEM;
				break;
			}
			v = nv;
		}
		memcpy(v[n].digest, de->d_name, IMG_DIGEST_HEX);
		char used[IMG_DIGEST_HEX + 8];
		snprintf(used, sizeof(used), "%s.used", de->d_name);
		struct stat st;
		v[n].used =
		    fstatat(dirfd(d), used, &st, 0) == 0 ? st.st_mtim : (struct timespec){0};
		n++;
	}
	closedir(d);
	if (r < 0) {
		free(v);
		return r;
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), lru_cmp);
	*ret = v;
	*ret_n = n;
	return 0;
}

int img_trees_prune(struct img_store *s, uint64_t free_bytes,
                    void (*on_drop)(const char *digest, void *ud), void *ud, struct sk_error *err)
{
	_cleanup_free_ struct tree_lru *v = NULL;
	size_t n = 0;
	int r = trees_unheld(s, &v, &n);
	if (r < 0)
		return sk_error_errno(err, r, "prune trees in %s", s->root);
	int removed = 0;
	for (size_t i = 0; i < n; i++) {
		struct statvfs sv;
		if (fstatvfs(s->root_fd, &sv) < 0)
			return sk_error_errno(err, -errno, "prune trees: statvfs %s", s->root);
		if ((uint64_t)sv.f_bavail * sv.f_frsize >= free_bytes)
			break;
		/* Held since it was listed: leave it. */
		if (tree_held(s, v[i].digest))
			continue;
		r = tree_remove(s, v[i].digest);
		if (r == -ENOENT || r == -EBUSY)
			continue;
		if (r < 0)
			return sk_error_errno(err, r, "prune tree %s", v[i].digest);
		tree_inodes_sweep(s, v[i].digest);
		if (on_drop)
			on_drop(v[i].digest, ud);
		removed++;
	}
	return removed;
}

/* ---- gc ---- */

struct gc {
	struct img_store *s;
	struct map keep_blobs; /* digest -> itself */
	struct map keep_trees;
	char **strings; /* the keys, owned here */
	size_t nstrings, capstrings;
	time_t cutoff;
	struct img_gc_stats *stats;
};

static int gc_keep(struct gc *g, struct map *m, const char *digest)
{
	if (map_get(m, digest))
		return 0;
	if (g->nstrings == g->capstrings) {
		size_t cap = g->capstrings ? 2 * g->capstrings : 64;
		char **v = realloc(g->strings, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		g->strings = v;
		g->capstrings = cap;
	}
	char *k = strdup(digest);
	if (!k)
		return -ENOMEM;
	g->strings[g->nstrings++] = k;
	return map_put(m, k, k);
}

/* A live (or held) image: its tree, its manifest and every blob it names are kept. */
static int gc_keep_image(struct gc *g, const char *digest, struct sk_error *err)
{
	if (!img_digest_valid(digest))
		return sk_error_set(err, -SK_EINVAL_SPEC, "gc: invalid digest \"%.80s\"", digest);
	if (gc_keep(g, &g->keep_trees, digest) < 0 || gc_keep(g, &g->keep_blobs, digest) < 0)
		return sk_error_set(err, -ENOMEM, "gc: out of memory");
	struct img_manifest m;
	img_manifest_init(&m);
	int r = img_manifest_load(g->s, digest, &img_default_limits, &m, err);
	if (r == -ENOENT)
		return 0; /* not here (its blobs may not be either) */
	if (r < 0)
		return sk_error_prefix(err, "gc: nothing removed");
	for (size_t i = 0; i < m.n && r == 0; i++)
		if (m.e[i].type == IMG_REG && gc_keep(g, &g->keep_blobs, m.e[i].digest) < 0)
			r = sk_error_set(err, -ENOMEM, "gc: out of memory");
	img_manifest_free(&m);
	return r;
}

void (*img_blob_remove_hook)(const char *digest);

/* An old blob nothing keeps: renamed aside into tmp/, its mtime looked at again, then removed.
 * A writer that stored the same bytes meanwhile found it there and made it as new as now
 * (blob_place): if that came before the rename, the blob is put back; if after, the writer
 * found the name empty and stored its own copy. Either way the blob it was told is stored is. */
static int gc_blob(int dfd, const char *prefix, const char *name, void *ctx)
{
	struct gc *g = ctx;
	char digest[IMG_DIGEST_HEX + 8];
	snprintf(digest, sizeof(digest), "%s%s", prefix, name);
	struct stat st;
	if (!img_digest_valid(digest) || map_get(&g->keep_blobs, digest) ||
	    fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_mtime > g->cutoff)
		return 0;
	char hex[17], aside[64];
	if (random_hex(8, hex, sizeof(hex)) < 0)
		return 0;
	snprintf(aside, sizeof(aside), "tmp/gc-%s", hex);
	if (img_blob_remove_hook)
		img_blob_remove_hook(digest);
	if (renameat2(dfd, name, g->s->root_fd, aside, RENAME_NOREPLACE) < 0)
		return 0;
	if (fstatat(g->s->root_fd, aside, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    st.st_mtime > g->cutoff) {
		/* Renewed: back, unless a new copy took the name (then ours is a spare). */
		if (renameat2(g->s->root_fd, aside, dfd, name, RENAME_NOREPLACE) == 0)
			return 0;
	}
	if (unlinkat(g->s->root_fd, aside, 0) == 0) {
		g->stats->blobs_removed++;
		g->stats->blob_bytes_removed += (uint64_t)st.st_size;
	}
	return 0;
}

/* Trees neither live nor held go; so do stamps and empty holds of trees that are gone. */
static void gc_trees(struct gc *g)
{
	DIR *d = store_opendir(g->s->root_fd, IMG_TREES_DIR);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		char digest[IMG_DIGEST_HEX];
		snprintf(digest, sizeof(digest), "%s", de->d_name);
		if (!img_digest_valid(digest))
			continue;
		if (strcmp(de->d_name, digest) == 0) {
			if (is_tree(dirfd(d), digest) && !map_get(&g->keep_trees, digest) &&
			    !tree_held(g->s, digest) && tree_remove(g->s, digest) == 0)
				g->stats->trees_removed++;
		} else if (!is_tree(dirfd(d), digest)) {
			/* "<digest>.used" or an empty "<digest>.holds" of a tree that is gone */
			if (unlinkat(dirfd(d), de->d_name, 0) < 0)
				unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR);
		}
	}
	closedir(d);
}

/* Files of writers that died (random names; O_TMPFILE ones vanish by themselves). */
static void gc_tmp(struct gc *g)
{
	DIR *d = store_opendir(g->s->root_fd, "tmp");
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		struct stat st;
		if (de->d_name[0] != '.' &&
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode) && st.st_mtime <= g->cutoff)
			unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
}

/* The held trees' digests (held trees are kept, and so is what they were made from). */
static int gc_keep_held(struct gc *g, struct sk_error *err)
{
	DIR *d = store_opendir(g->s->root_fd, IMG_TREES_DIR);
	if (!d)
		return sk_error_errno(err, -errno, "gc: open %s/trees", g->s->root);
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d))) {
		char digest[IMG_DIGEST_HEX];
		snprintf(digest, sizeof(digest), "%s", de->d_name);
		if (img_digest_valid(digest) && strcmp(de->d_name + 64, ".holds") == 0 &&
		    tree_held(g->s, digest))
			r = gc_keep_image(g, digest, err);
	}
	closedir(d);
	return r;
}

int img_store_gc(struct img_store *s, const char *const *live, size_t nlive, time_t grace_s,
                 struct img_gc_stats *stats, struct sk_error *err)
{
	struct img_gc_stats local = {0};
	struct gc g = {.s = s, .cutoff = time(NULL) - grace_s, .stats = &local};
	map_init(&g.keep_blobs);
	map_init(&g.keep_trees);
	int r = 0;
	for (size_t i = 0; i < nlive && r == 0; i++)
		r = gc_keep_image(&g, live[i], err);
	if (r == 0)
		r = gc_keep_held(&g, err);
	/* Everything that is kept is known: removal starts only now. Trees before inodes (an
	 * inode goes once no tree links to it), and blobs last. */
	if (r == 0) {
		gc_trees(&g);
		img_trees_clean_stale(s);
		local.inodes_removed = inodes_sweep(s);
		walk2(s->root_fd, "blobs/sha256", gc_blob, &g);
		gc_tmp(&g);
		if (stats)
			*stats = local;
	}
	for (size_t i = 0; i < g.nstrings; i++)
		free(g.strings[i]);
	free(g.strings);
	map_release(&g.keep_blobs);
	map_release(&g.keep_trees);
	return r;
}
