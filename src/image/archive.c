/* Tar archives into the store with libarchive: one tar as a layer (img_layer_from_tar), and OCI
 * image archives as an image (img_oci_import, below the layer code). Everything here reads what a
 * client sent: member names are confined lexically to the destination, nothing is ever created
 * on the filesystem except blobs in the store (and unlinked spool files under its tmp/), and
 * sizes are checked against img_limits before the bytes are read. */
#include "archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../lib/encoding.h"
#include "../lib/hash.h"
#include "../lib/jsonlim.h"
#include "../lib/map.h"

#define TAR_READ_BLOCK_BYTES (64 * 1024)
/* Header, pax records and padding a member may take beyond its data and xattrs: a backstop
 * against archives whose decompressed stream grows past what their members declare. */
#define TAR_MEMBER_OVERHEAD_BYTES (64 * 1024)
/* Names, link targets and xattrs the entries of one layer may hold in all (they are held in
 * memory while it is read, then in its manifest, which loads only up to 512 MiB of JSON): hard
 * links copy their target's xattrs, so without it one file with 64 KiB of them and a few
 * thousand links (a few hundred bytes compressed) would cost gigabytes. */
#define TAR_MAX_METADATA_BYTES (256ULL * 1024 * 1024)
#define OCI_JSON_MAX_BYTES     (4 * 1024 * 1024)
#define OCI_MAX_LAYERS         256
#define OCI_MAX_MEMBERS        4096
#define OCI_MAX_LINK_HOPS      8
#define OCI_CONFIG_MAX_STRINGS 4096

static void archive_freep(struct archive **a)
{
	if (*a)
		archive_read_free(*a);
}
#define _cleanup_archive_ _cleanup_(archive_freep)

/* A byte range of a file as libarchive's input: a member of an image archive spooled with
 * the others into one file. */
struct tar_range {
	int fd;
	uint64_t off, end;
	char buf[TAR_READ_BLOCK_BYTES];
};

static la_ssize_t tar_range_read(struct archive *a, void *data, const void **ret)
{
	struct tar_range *rg = data;
	size_t want =
	    rg->end - rg->off < sizeof(rg->buf) ? (size_t)(rg->end - rg->off) : sizeof(rg->buf);
	ssize_t n;
	do
		n = pread(rg->fd, rg->buf, want, (off_t)rg->off);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		archive_set_error(a, errno, "read spooled member");
		return ARCHIVE_FATAL;
	}
	rg->off += (uint64_t)n;
	*ret = rg->buf;
	return n;
}

static la_int64_t tar_range_skip(struct archive *a, void *data, la_int64_t request)
{
	(void)a;
	struct tar_range *rg = data;
	uint64_t n = request < 0 ? 0 : (uint64_t)request;
	if (n > rg->end - rg->off)
		n = rg->end - rg->off;
	rg->off += n;
	return (la_int64_t)n;
}

static int tar_range_close(struct archive *a, void *data)
{
	(void)a;
	free(data);
	return ARCHIVE_OK;
}

/* An archive reader for tar in its variants (ustar, pax, GNU), behind any compression
 * libarchive knows; other formats (zip, cpio, iso) are not enabled, so they fail to open. It
 * reads fd from its offset to its end, or with len set the len bytes at off. */
static int tar_open(int fd, uint64_t off, const uint64_t *len, struct archive **ret,
                    struct sk_error *err)
{
	struct archive *a = archive_read_new();
	if (!a)
		return sk_error_set(err, -ENOMEM, "archive reader: out of memory");
	archive_read_support_filter_all(a);
	archive_read_support_format_tar(a);
	int r;
	if (len) {
		struct tar_range *rg = malloc(sizeof(*rg));
		if (!rg) {
			archive_read_free(a);
			return sk_error_set(err, -ENOMEM, "out of memory");
		}
		*rg = (struct tar_range){.fd = fd, .off = off, .end = off + *len};
		archive_read_set_callback_data(a, rg);
		archive_read_set_read_callback(a, tar_range_read);
		archive_read_set_skip_callback(a, tar_range_skip);
		archive_read_set_close_callback(a, tar_range_close);
		r = archive_read_open1(a);
	} else {
		r = archive_read_open_fd(a, fd, TAR_READ_BLOCK_BYTES);
	}
	if (r != ARCHIVE_OK) {
		r = sk_error_set(
		    err, -SK_EINVAL_SPEC,
		    "not a tar archive (tar, pax or GNU tar, optionally compressed): %s",
		    archive_error_string(a) ? archive_error_string(a) : "unreadable");
		archive_read_free(a);
		return r;
	}
	*ret = a;
	return 0;
}

/* The next member's header: 1, 0 at the end, or an error. */
static int tar_next(struct archive *a, struct archive_entry **ret, struct sk_error *err)
{
	int r = archive_read_next_header(a, ret);
	if (r == ARCHIVE_EOF)
		return 0;
	if (r == ARCHIVE_OK || r == ARCHIVE_WARN)
		return 1;
	const char *msg = archive_error_string(a);
	return sk_error_set(err, -SK_EINVAL_SPEC, "%s archive: %s",
	                    archive_file_count(a) == 0 ? "not a tar" : "bad tar",
	                    msg ? msg : "unreadable");
}

/* A name from an archive that is not valid UTF-8 must not reach a message as it is (the
 * messages travel in JSON): its first bytes, those outside printable ASCII as \xNN. */
static void name_escaped(const char *name, char *out, size_t size)
{
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)name; *p && o + 5 < size; p++) {
		if (*p >= 0x20 && *p < 0x7f && *p != '\\')
			out[o++] = (char)*p;
		else
			o += (size_t)snprintf(out + o, size - o, "\\x%02x", *p);
	}
	out[o] = '\0';
}

/* Names, link targets and xattr names become manifest strings, which are UTF-8 (JSON): one that
 * is not is refused at its header, before any of the member's data is stored. */
static int tar_check_utf8(uint64_t member, const char *what, const char *s, struct sk_error *err)
{
	if (utf8_valid((const unsigned char *)s, strlen(s)))
		return 0;
	char shown[128];
	name_escaped(s, shown, sizeof(shown));
	return sk_error_set(err, -SK_EINVAL_SPEC,
	                    "member %" PRIu64 ": %s \"%s\" is not valid UTF-8", member, what,
	                    shown);
}

/* Make err's message valid UTF-8, each byte that is not part of a valid sequence made '?':
 * messages quote names cut to a length ("%.200s", the message buffer's end), which may cut a
 * character in two, and the message travels in JSON. Returns r. */
static int msg_utf8(struct sk_error *err, int r)
{
	if (err)
		utf8_sanitize(err->msg);
	return r;
}

/* Join dest (an absolute normalized path) and the member name name into out: leading "/" and
 * "./", empty and "." components dropped, ".." resolved lexically; a ".." that would climb above
 * dest is refused (-SK_EINVAL_SPEC), as is a path past IMG_PATH_MAX. */
static int tar_path_join(const char *dest, const char *name, char *out, size_t size,
                         struct sk_error *err)
{
	size_t base = strcmp(dest, "/") == 0 ? 0 : strlen(dest);
	if (base >= size)
		return sk_error_set(err, -SK_EINVAL_SPEC, "destination path too long");
	memcpy(out, dest, base);
	size_t len = base;
	const char *p = name;
	while (*p) {
		const char *c = p;
		while (*p && *p != '/')
			p++;
		size_t clen = (size_t)(p - c);
		while (*p == '/')
			p++;
		if (clen == 0 || (clen == 1 && c[0] == '.'))
			continue;
		if (clen == 2 && c[0] == '.' && c[1] == '.') {
			if (len == base)
				return sk_error_set(
				    err, -SK_EINVAL_SPEC,
				    "member \"%s\": \"..\" climbs above the archive's root", name);
			while (len > base && out[len - 1] != '/')
				len--;
			len--; /* the '/' itself */
			continue;
		}
		if (len + 1 + clen > IMG_PATH_MAX || len + 1 + clen >= size)
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "member \"%.200s...\": path too long", name);
		out[len++] = '/';
		memcpy(out + len, c, clen);
		len += clen;
	}
	if (len == 0)
		out[len++] = '/';
	out[len] = '\0';
	return 0;
}

/* The layer being read: entries as they come (deep copies), the live one per path in byname
 * (value: index + 1), dead[] for those a later member replaced. */
struct tar_layer {
	struct img_manifest m;
	struct map byname;
	unsigned char *dead;
	size_t dead_cap;
	uint64_t members, bytes;
	uint64_t meta_bytes; /* paths, targets and xattrs of every entry put, dead ones included */
	uint64_t devices_dropped, sockets_dropped;
};

static void tar_layer_release(struct tar_layer *t)
{
	img_manifest_free(&t->m);
	map_release(&t->byname);
	free(t->dead);
}

static struct img_entry *tar_layer_find(struct tar_layer *t, const char *path)
{
	uintptr_t i = (uintptr_t)map_get(&t->byname, path);
	return i ? &t->m.e[i - 1] : NULL;
}

/* Add e. Later members win: an older entry at the same path is dropped (an opaque mark stays on
 * a directory); what this does to entries below the path is settled by tar_layer_settle. */
static int tar_layer_put(struct tar_layer *t, struct img_entry *e, struct sk_error *err)
{
	int r;
	t->meta_bytes += strlen(e->path) + (e->target ? strlen(e->target) : 0);
	for (size_t i = 0; i < e->nxattrs; i++)
		t->meta_bytes += strlen(e->xattrs[i].name) + e->xattrs[i].len;
	if (t->meta_bytes > TAR_MAX_METADATA_BYTES)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "member \"%s\": the layer's names, link targets and extended "
		                    "attributes take more than %llu bytes",
		                    e->path, TAR_MAX_METADATA_BYTES);
	uintptr_t old = (uintptr_t)map_get(&t->byname, e->path);
	if (old) {
		struct img_entry *o = &t->m.e[old - 1];
		if (o->type == IMG_DIR && e->type == IMG_DIR)
			e->opaque |= o->opaque;
		t->dead[old - 1] = 1;
		map_remove(&t->byname, e->path);
	}
	if (t->m.n >= t->dead_cap) {
		size_t cap = t->dead_cap ? 2 * t->dead_cap : 64;
		unsigned char *d = realloc(t->dead, cap);
		if (!d)
			return sk_error_set(err, -ENOMEM, "out of memory");
		memset(d + t->dead_cap, 0, cap - t->dead_cap);
		t->dead = d;
		t->dead_cap = cap;
	}
	r = img_manifest_add(&t->m, e, err);
	if (r < 0)
		return r;
	size_t i = t->m.n - 1;
	if (map_put(&t->byname, t->m.e[i].path, (void *)(uintptr_t)(i + 1)) < 0)
		return sk_error_set(err, -ENOMEM, "out of memory");
	return 0;
}

static int xattr_cmp(const void *a, const void *b)
{
	const struct img_xattr *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	if (c)
		return c;
	return x < y ? -1 : x > y; /* equal names: keep the archive's order, the first is kept */
}

/* The attributes an archive may give a file; the rest are dropped. The store materializes
 * trees as the host's root, so a name is a request to the host's kernel: trusted.* and
 * user.overlay.* steer overlayfs (a lower layer's could redirect or hide files), and
 * security.* labels other than file capabilities (selinux, SMACK64EXEC, ima, evm) steer host
 * LSMs that would trust a label the client chose. File capabilities stay (ping needs them; in
 * the sandbox no_new_privs and the bounding set make them grant nothing beyond it), as do
 * POSIX ACLs. */
static int xattr_dropped(const char *name)
{
	if (strncmp(name, "user.", 5) == 0)
		return strncmp(name, "user.overlay.", 13) == 0;
	return strcmp(name, "security.capability") != 0 &&
	       strcmp(name, "system.posix_acl_access") != 0 &&
	       strcmp(name, "system.posix_acl_default") != 0;
}

/* The member's extended attributes (pax SCHILY.xattr / LIBARCHIVE.xattr) into *ret (pointing
 * into ae's storage: valid until the next header), sorted by name and unique. */
static int tar_xattrs(struct archive_entry *ae, const char *path, const struct img_limits *lim,
                      struct img_xattr **ret, size_t *ret_n, uint64_t *ret_bytes,
                      struct sk_error *err)
{
	int count = archive_entry_xattr_reset(ae);
	*ret = NULL;
	*ret_n = 0;
	*ret_bytes = 0;
	if (count <= 0)
		return 0;
	_cleanup_free_ struct img_xattr *x = calloc((size_t)count, sizeof(*x));
	if (!x)
		return sk_error_set(err, -ENOMEM, "out of memory");
	size_t n = 0;
	const char *name;
	const void *value;
	size_t len;
	while (n < (size_t)count &&
	       archive_entry_xattr_next(ae, &name, &value, &len) == ARCHIVE_OK) {
		if (!name || !*name || xattr_dropped(name))
			continue;
		if (!utf8_valid((const unsigned char *)name, strlen(name))) {
			char shown[128];
			name_escaped(name, shown, sizeof(shown));
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "member \"%s\": extended attribute name \"%s\" is not "
			                    "valid UTF-8",
			                    path, shown);
		}
		if (strlen(name) > IMG_XATTR_NAME_MAX || len > IMG_XATTR_VALUE_MAX)
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "member \"%s\": extended attribute \"%.64s\" too large",
			                    path, name);
		x[n].name = (char *)name;
		x[n].value = (unsigned char *)value;
		x[n].len = len;
		n++;
	}
	qsort(x, n, sizeof(*x), xattr_cmp);
	/* counted once unique: libarchive's writer gives each attribute twice (LIBARCHIVE.xattr
	 * and SCHILY.xattr) */
	size_t u = 0;
	uint64_t bytes = 0;
	for (size_t i = 0; i < n; i++) {
		if (u > 0 && strcmp(x[u - 1].name, x[i].name) == 0)
			continue;
		x[u++] = x[i];
		bytes += strlen(x[i].name) + x[i].len;
		if (bytes > lim->max_xattr_bytes)
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "member \"%s\": extended attributes past %" PRIu64
			                    " bytes",
			                    path, lim->max_xattr_bytes);
	}
	*ret_n = u;
	*ret_bytes = bytes;
	*ret = u ? TAKE_PTR(x) : NULL;
	return 0;
}

/* Stream the member's data into the store as a blob, hashed once. The declared size was checked
 * against the limits; a stream that gives more (or less) than declared is refused. */
static int tar_read_file(struct img_store *s, struct archive *a, const char *path, uint64_t size,
                         uint64_t budget, char digest[IMG_DIGEST_HEX], struct sk_error *err)
{
	struct img_blob_writer *w = NULL;
	int r = img_blob_begin(s, size, &w, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *buf = malloc(TAR_READ_BLOCK_BYTES);
	if (!buf) {
		img_blob_abort(w);
		return sk_error_set(err, -ENOMEM, "out of memory");
	}
	uint64_t got = 0;
	for (;;) {
		la_ssize_t n = archive_read_data(a, buf, TAR_READ_BLOCK_BYTES);
		if (n == 0)
			break;
		if (n < 0) {
			r = sk_error_set(err, -SK_EINVAL_SPEC, "member \"%s\": %s", path,
			                 archive_error_string(a) ? archive_error_string(a)
			                                         : "bad data");
			goto fail;
		}
		got += (uint64_t)n;
		if (got > size || (uint64_t)archive_filter_bytes(a, 0) > budget) {
			r = sk_error_set(err, -SK_EINVAL_SPEC,
			                 "member \"%s\": more data than its declared %" PRIu64
			                 " bytes",
			                 path, size);
			goto fail;
		}
		r = img_blob_write(w, buf, (size_t)n, err);
		if (r < 0)
			goto fail;
	}
	if (got != size) {
		r = sk_error_set(err, -SK_EINVAL_SPEC,
		                 "member \"%s\": truncated (%" PRIu64 " of %" PRIu64 " bytes)",
		                 path, got, size);
		goto fail;
	}
	uint64_t stored = 0;
	return img_blob_finish(w, NULL, digest, &stored, err);
fail:
	img_blob_abort(w);
	return r;
}

/* The state of one img_layer_from_tar call. */
struct tar_reader {
	struct img_store *s;
	struct archive *a;
	const char *dest;
	int flags;
	const struct img_limits *lim;
	struct tar_layer t;
	uint64_t budget; /* decompressed bytes the members so far may take */
};

/* A whiteout member ("NAME" is the part after ".wh."): 1 when handled, 0 when path is no
 * whiteout. */
static int tar_whiteout(struct tar_reader *rd, char *path, struct sk_error *err)
{
	char *slash = strrchr(path, '/');
	const char *base = slash + 1;
	if (!(rd->flags & IMG_TAR_WHITEOUTS) || strncmp(base, ".wh.", 4) != 0)
		return 0;
	const char *name = base + 4;
	char parent[IMG_PATH_MAX + 1];
	size_t plen = slash == path ? 1 : (size_t)(slash - path);
	memcpy(parent, path, plen);
	parent[plen] = '\0';
	struct img_entry e = {.uid = 0, .gid = 0, .mode = 0755};
	if (strcmp(name, ".wh..opq") == 0) {
		struct img_entry *d = tar_layer_find(&rd->t, parent);
		if (d && d->type == IMG_DIR) {
			d->opaque = 1;
			return 1;
		}
		/* No directory entry (yet): an opaque one with default metadata; a later member for
		 * the directory keeps the mark. */
		e.path = parent;
		e.type = IMG_DIR;
		e.opaque = 1;
		int r = tar_layer_put(&rd->t, &e, err);
		return r < 0 ? r : 1;
	}
	if (strncmp(name, ".wh.", 4) == 0)
		return 1; /* other aufs metadata (.wh..wh.plnk, ...): nothing to apply */
	if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return sk_error_set(err, -SK_EINVAL_SPEC, "member \"%s\": bad whiteout", path);
	memmove(slash + 1, name, strlen(name) + 1);
	e.path = path;
	e.type = IMG_WHITEOUT;
	e.mode = 0;
	int r = tar_layer_put(&rd->t, &e, err);
	return r < 0 ? r : 1;
}

/* n more bytes of the layer, within its limit. */
static int tar_count_bytes(struct tar_reader *rd, const char *path, uint64_t n,
                           struct sk_error *err)
{
	rd->t.bytes += n;
	if (rd->t.bytes > rd->lim->max_bytes)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "member \"%s\": the archive holds more than %" PRIu64 " bytes",
		                    path, rd->lim->max_bytes);
	return 0;
}

/* The path of the nearest ancestor of path (in the layer so far) that is not a directory: a
 * whiteout or a later file or symlink there removed what is at path, which tar_layer_settle
 * will drop. NULL when every ancestor the layer holds is a directory. */
static const char *tar_layer_removed_by(struct tar_layer *t, const char *path)
{
	char up[IMG_PATH_MAX + 1];
	snprintf(up, sizeof(up), "%s", path);
	for (char *slash = strrchr(up, '/'); slash && slash != up; slash = strrchr(up, '/')) {
		*slash = '\0';
		const struct img_entry *a = tar_layer_find(t, up);
		if (a && a->type != IMG_DIR)
			return a->path;
	}
	return NULL;
}

/* A hard link: the same content and metadata as the regular file target already in this
 * layer; anything else (a path outside the archive, a directory, itself) is refused. */
static int tar_hardlink(struct tar_reader *rd, const char *path, const char *link,
                        struct sk_error *err)
{
	char target[IMG_PATH_MAX + 1];
	if (tar_path_join(rd->dest, link, target, sizeof(target), err) < 0)
		return sk_error_prefix(err, "hard link \"%s\"", path);
	const struct img_entry *t = tar_layer_find(&rd->t, target);
	if (!t || t->type != IMG_REG || strcmp(target, path) == 0)
		return sk_error_set(
		    err, -SK_EINVAL_SPEC,
		    "member \"%s\": hard link to \"%s\", which is not a regular file "
		    "earlier in the archive",
		    path, link);
	const char *gone = tar_layer_removed_by(&rd->t, target);
	if (gone)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "member \"%s\": hard link to \"%s\", which \"%s\" removed "
		                    "(a whiteout, or not a directory any more)",
		                    path, link, gone);
	struct img_entry e = *t;
	e.path = (char *)path;
	int r = tar_count_bytes(rd, path, e.size, err);
	return r < 0 ? r : tar_layer_put(&rd->t, &e, err);
}

/* Owner, mode and mtime of the member, checked. */
static int tar_meta(struct archive_entry *ae, const char *path, struct img_entry *e,
                    struct sk_error *err)
{
	la_int64_t uid = archive_entry_uid(ae), gid = archive_entry_gid(ae);
	if (uid < 0 || gid < 0 || uid >= UINT32_MAX || gid >= UINT32_MAX)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "member \"%s\": bad owner %" PRId64 ":%" PRId64, path,
		                    (int64_t)uid, (int64_t)gid);
	e->uid = (uint32_t)uid;
	e->gid = (uint32_t)gid;
	e->mode = archive_entry_perm(ae) & 07777;
	if (archive_entry_mtime_is_set(ae)) {
		e->mtime_sec = archive_entry_mtime(ae);
		long nsec = archive_entry_mtime_nsec(ae);
		e->mtime_nsec = nsec >= 0 && nsec < 1000000000 ? (uint32_t)nsec : 0;
	}
	return 0;
}

/* One member. */
static int tar_member(struct tar_reader *rd, struct archive_entry *ae, struct sk_error *err)
{
	const struct img_limits *lim = rd->lim;
	const char *name = archive_entry_pathname(ae);
	if (!name || !*name)
		return sk_error_set(err, -SK_EINVAL_SPEC, "member %" PRIu64 ": no name",
		                    rd->t.members);
	if (++rd->t.members > lim->max_files)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "the archive holds more than %" PRIu64 " members",
		                    lim->max_files);
	const char *link = archive_entry_hardlink(ae);
	mode_t type = archive_entry_filetype(ae);
	const char *sym = type == AE_IFLNK && !link ? archive_entry_symlink(ae) : NULL;
	int r = tar_check_utf8(rd->t.members, "name", name, err);
	if (r >= 0 && link)
		r = tar_check_utf8(rd->t.members, "hard link target", link, err);
	if (r >= 0 && sym)
		r = tar_check_utf8(rd->t.members, "symlink target", sym, err);
	if (r < 0)
		return r;
	char path[IMG_PATH_MAX + 1];
	r = tar_path_join(rd->dest, name, path, sizeof(path), err);
	if (r < 0)
		return r;

	/* Sizes first, before any data is read: a sparse file declares its logical size. */
	uint64_t size = archive_entry_size_is_set(ae) && archive_entry_size(ae) > 0
	                    ? (uint64_t)archive_entry_size(ae)
	                    : 0;
	if (size > lim->max_file_bytes)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "member \"%s\": %" PRIu64 " bytes, past the limit of %" PRIu64,
		                    path, size, lim->max_file_bytes);
	_cleanup_free_ struct img_xattr *xattrs = NULL;
	size_t nxattrs = 0;
	uint64_t xbytes = 0;
	r = tar_xattrs(ae, path, lim, &xattrs, &nxattrs, &xbytes, err);
	if (r < 0)
		return r;
	/* old GNU sparse files list their regions in extra header blocks */
	rd->budget += TAR_MEMBER_OVERHEAD_BYTES + 3 * xbytes + 3 * (uint64_t)strlen(name) +
	              64 * (uint64_t)archive_entry_sparse_count(ae) +
	              ((size + 511) & ~(uint64_t)511);
	if ((uint64_t)archive_filter_bytes(rd->a, 0) > rd->budget)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "member \"%s\": its header is larger than the limits allow",
		                    path);
	/* Every member's data counts, stored or not: libarchive reads past a whiteout's or a pax
	 * hard link's data as it reads a file's. */
	r = tar_count_bytes(rd, path, size, err);
	if (r < 0)
		return r;

	if ((link || type != AE_IFDIR) && strcmp(path, rd->dest) == 0)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "member \"%s\" would replace the destination directory", name);
	/* a whiteout is one by its name, whatever its type (a hard link too), as Docker reads it */
	r = tar_whiteout(rd, path, err);
	if (r != 0)
		return r < 0 ? r : 0;
	if (link)
		return tar_hardlink(rd, path, link, err);

	struct img_entry e = {.path = path, .xattrs = xattrs, .nxattrs = nxattrs};
	r = tar_meta(ae, path, &e, err);
	if (r < 0)
		return r;
	switch (type) {
	case AE_IFREG:
		e.type = IMG_REG;
		e.size = size;
		r = tar_read_file(rd->s, rd->a, path, size, rd->budget, e.digest, err);
		if (r < 0)
			return r;
		break;
	case AE_IFDIR: e.type = IMG_DIR; break;
	case AE_IFLNK:
		e.type = IMG_SYMLINK;
		e.target = (char *)sym;
		if (!e.target || !*e.target || strlen(e.target) > IMG_PATH_MAX)
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "member \"%s\": bad symlink target", path);
		break;
	case AE_IFIFO: e.type = IMG_FIFO; break;
	case AE_IFCHR:
	case AE_IFBLK: rd->t.devices_dropped++; return 0;
	case AE_IFSOCK: rd->t.sockets_dropped++; return 0;
	default:
		return sk_error_set(err, -SK_EINVAL_SPEC, "member \"%s\": unsupported type 0%o",
		                    path, (unsigned)type);
	}
	return tar_layer_put(&rd->t, &e, err);
}

/* Byte order, but with '/' below every other byte: a path's descendants follow it at once. */
static int tree_cmp(const void *a, const void *b, void *data)
{
	const struct img_entry *e = data;
	size_t i = *(const size_t *)a, j = *(const size_t *)b;
	const unsigned char *x = (const unsigned char *)e[i].path;
	const unsigned char *y = (const unsigned char *)e[j].path;
	for (; *x == *y && *x; x++, y++)
		;
	if (*x != *y) {
		int rx = *x == '/' ? 1 : *x ? *x + 1 : 0, ry = *y == '/' ? 1 : *y ? *y + 1 : 0;
		return rx - ry;
	}
	return i < j ? -1 : i > j;
}

/* A path on the way down in tar_layer_settle, with the first and last member (numbered from 1
 * in archive order; 0 and SIZE_MAX: none) that was not a directory at it or above it. */
struct settle_level {
	const char *path;
	size_t len;
	size_t first_nondir, last_nondir;
};

static int settle_is_below(const struct settle_level *l, const char *path)
{
	if (l->len == 1)
		return path[1] != '\0';
	return strncmp(l->path, path, l->len) == 0 && path[l->len] == '/';
}

/* What entries below other entries come to, in one pass over the entries in tree order (rather
 * than a look at every ancestor of every member, which a deep archive makes quadratic): a member
 * below a path where an earlier member was not a directory (a symlink, a file, a whiteout) went
 * "through" it and is refused; one below a path that a later member made a non-directory or
 * whited out is dropped, as extracting the tar in order would remove it. */
static int tar_layer_settle(struct tar_layer *t, struct sk_error *err)
{
	size_t n = t->m.n;
	if (n == 0)
		return 0;
	_cleanup_free_ size_t *order = calloc(n, sizeof(*order));
	_cleanup_free_ struct settle_level *stack = calloc(n, sizeof(*stack));
	if (!order || !stack)
		return sk_error_set(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		order[i] = i;
	qsort_r(order, n, sizeof(*order), tree_cmp, t->m.e);
	size_t depth = 0;
	for (size_t g = 0; g < n;) {
		const char *path = t->m.e[order[g]].path;
		while (depth > 0 && !settle_is_below(&stack[depth - 1], path))
			depth--;
		size_t first = depth ? stack[depth - 1].first_nondir : SIZE_MAX;
		size_t last = depth ? stack[depth - 1].last_nondir : 0;
		struct settle_level own = {
		    .path = path, .len = strlen(path), .first_nondir = first, .last_nondir = last};
		for (; g < n && strcmp(t->m.e[order[g]].path, path) == 0; g++) {
			size_t i = order[g], seq = i + 1;
			if (first < seq) {
				const struct settle_level *l = stack;
				while (l->first_nondir >= seq)
					l++;
				return sk_error_set(
				    err, -SK_EINVAL_SPEC,
				    "member \"%s\": below \"%s\", which an earlier member "
				    "made a symlink, a file or a whiteout",
				    path, l->path);
			}
			if (last > seq)
				t->dead[i] = 1;
			if (t->m.e[i].type != IMG_DIR) {
				if (seq < own.first_nondir)
					own.first_nondir = seq;
				if (seq > own.last_nondir)
					own.last_nondir = seq;
			}
		}
		stack[depth++] = own;
	}
	return 0;
}

/* The live entries of t into a fresh manifest, sorted and checked as a layer. */
static int tar_layer_finish(struct tar_layer *t, const struct img_limits *lim,
                            struct img_manifest *ret, struct sk_error *err)
{
	int r = tar_layer_settle(t, err);
	if (r < 0)
		return r;
	struct img_manifest m;
	img_manifest_init(&m);
	for (size_t i = 0; i < t->m.n && r >= 0; i++)
		if (!t->dead[i])
			r = img_manifest_add(&m, &t->m.e[i], err);
	if (r >= 0)
		r = img_manifest_sort(&m, err);
	if (r >= 0)
		r = img_manifest_check(&m, 1, lim, err);
	if (r < 0) {
		img_manifest_free(&m);
		return r;
	}
	img_manifest_free(ret);
	*ret = m;
	return 0;
}

/* A layer from the open archive a (see img_layer_from_tar_stats). */
static int tar_layer_read(struct img_store *s, struct archive *a, const char *dest, int flags,
                          const struct img_limits *lim, struct img_manifest *layer,
                          struct img_tar_stats *ret_stats, struct sk_error *err)
{
	struct tar_reader rd = {.s = s,
	                        .a = a,
	                        .dest = dest,
	                        .flags = flags,
	                        .lim = lim,
	                        .budget = TAR_MEMBER_OVERHEAD_BYTES};
	img_manifest_init(&rd.t.m);
	map_init(&rd.t.byname);
	/* the layer so far: hard links may name its files, members replace its entries */
	int r = 0;
	uint64_t seeded = 0;
	for (size_t i = 0; i < layer->n && r >= 0; i++) {
		r = tar_layer_put(&rd.t, &layer->e[i], err);
		if (layer->e[i].type == IMG_REG)
			seeded += layer->e[i].size;
	}
	rd.t.bytes = seeded;
	struct archive_entry *ae;
	while (r >= 0 && (r = tar_next(a, &ae, err)) > 0) {
		r = tar_member(&rd, ae, err);
		if (r < 0)
			break;
	}
	if (r >= 0)
		r = tar_layer_finish(&rd.t, lim, layer, err);
	if (r >= 0 && ret_stats) {
		*ret_stats = (struct img_tar_stats){.members = rd.t.members,
		                                    .bytes = rd.t.bytes - seeded,
		                                    .devices_dropped = rd.t.devices_dropped,
		                                    .sockets_dropped = rd.t.sockets_dropped};
		if (rd.t.devices_dropped || rd.t.sockets_dropped)
			snprintf(ret_stats->warning, sizeof(ret_stats->warning),
			         "dropped %" PRIu64 " device node(s) and %" PRIu64 " socket(s)",
			         rd.t.devices_dropped, rd.t.sockets_dropped);
	}
	tar_layer_release(&rd.t);
	return r;
}

int img_layer_from_tar_stats(struct img_store *s, int fd, const char *dest, int flags,
                             const struct img_limits *lim, struct img_manifest *layer,
                             struct img_tar_stats *ret_stats, struct sk_error *err)
{
	if (!lim)
		lim = &img_default_limits;
	if (!img_path_valid(dest))
		return sk_error_set(err, -SK_EINVAL_SPEC, "bad destination path \"%s\"", dest);
	_cleanup_archive_ struct archive *a = NULL;
	int r = tar_open(fd, 0, NULL, &a, err);
	if (r >= 0)
		r = tar_layer_read(s, a, dest, flags, lim, layer, ret_stats, err);
	return r < 0 ? msg_utf8(err, r) : r;
}

int img_layer_from_tar(struct img_store *s, int fd, const char *dest, int flags,
                       const struct img_limits *lim, struct img_manifest *layer,
                       struct sk_error *err)
{
	return img_layer_from_tar_stats(s, fd, dest, flags, lim, layer, NULL, err);
}

/* OCI image archives. The outer tar is read once, its regular members spooled into unlinked
 * files under the store's tmp/ (hashed as they come), so that index, manifests, config and
 * layers can then be read in whatever order the layout names them. */

/* What the outer archive may hold: its layers may be larger than the image they make (tar
 * headers, files a later layer removes), but not without bound. */
#define OCI_SPOOL_FACTOR   2
#define OCI_METADATA_BYTES (64ULL * 1024 * 1024) /* index, manifests, configs */

/* a * b, or UINT64_MAX where that overflows (limits may be "none": UINT64_MAX) */
static uint64_t sat_mul(uint64_t a, uint64_t b)
{
	return b && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

struct oci_member {
	char *name;         /* normalized, absolute */
	char *link;         /* a symlink's or hard link's target, normalized; NULL: a file */
	uint64_t off, size; /* where the spool holds its bytes */
	int gone;           /* replaced by a later member of the same name */
	char digest[IMG_DIGEST_HEX];
};

struct oci_archive {
	struct img_store *s;
	struct oci_member *m;
	size_t n, cap;
	struct map byname;
	uint64_t bytes;
	int spool_fd; /* every file member, one after the other */
	uint64_t spool_end;
};

static void oci_archive_release(struct oci_archive *ar)
{
	for (size_t i = 0; i < ar->n; i++) {
		free(ar->m[i].name);
		free(ar->m[i].link);
	}
	free(ar->m);
	closep(&ar->spool_fd);
	map_release(&ar->byname);
}

/* Append the current member's data to the spool (an unlinked file under the store's tmp/), its
 * SHA-256 into mem. */
static int oci_spool(struct oci_archive *ar, struct archive *a, uint64_t max,
                     struct oci_member *mem, struct sk_error *err)
{
	if (ar->spool_fd < 0) {
		ar->spool_fd = openat(ar->s->root_fd, "tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		if (ar->spool_fd < 0)
			return sk_error_errno(err, -errno, "spool file in the store's tmp/");
	}
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(ctx);
		return sk_error_set(err, -EIO, "sha256: cannot start");
	}
	_cleanup_free_ char *buf = malloc(TAR_READ_BLOCK_BYTES);
	int r = buf ? 0 : sk_error_set(err, -ENOMEM, "out of memory");
	uint64_t got = 0;
	while (r >= 0) {
		la_ssize_t n = archive_read_data(a, buf, TAR_READ_BLOCK_BYTES);
		if (n == 0)
			break;
		if (n < 0) {
			r = sk_error_set(err, -SK_EINVAL_SPEC, "member \"%s\": %s", mem->name,
			                 archive_error_string(a) ? archive_error_string(a)
			                                         : "bad data");
			break;
		}
		got += (uint64_t)n;
		if (got > max) {
			r = sk_error_set(err, -SK_EINVAL_SPEC,
			                 "member \"%s\": past %" PRIu64 " bytes", mem->name, max);
			break;
		}
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		for (la_ssize_t off = 0; off < n && r >= 0;) {
			ssize_t w =
			    pwrite(ar->spool_fd, buf + off, (size_t)(n - off),
			           (off_t)(ar->spool_end + got - (uint64_t)n + (uint64_t)off));
			if (w < 0 && errno != EINTR)
				r = sk_error_errno(err, -errno, "spool member \"%s\"", mem->name);
			else if (w > 0)
				off += w;
		}
	}
	unsigned char md[32];
	unsigned int mdlen = 0;
	if (!EVP_DigestFinal_ex(ctx, md, &mdlen) && r >= 0)
		r = sk_error_set(err, -EIO, "sha256: cannot finish");
	EVP_MD_CTX_free(ctx);
	if (r < 0)
		return r;
	hex_encode(md, sizeof(md), mem->digest);
	mem->off = ar->spool_end;
	mem->size = got;
	ar->spool_end += got;
	return 0;
}

static int oci_member_add(struct oci_archive *ar, struct oci_member *mem, struct sk_error *err)
{
	uintptr_t old = (uintptr_t)map_get(&ar->byname, mem->name);
	if (old) { /* later members win, as tar extracts them */
		struct oci_member *o = &ar->m[old - 1];
		map_remove(&ar->byname, o->name);
		o->gone = 1;
	}
	if (ar->n == ar->cap) {
		size_t cap = ar->cap ? 2 * ar->cap : 16;
		struct oci_member *m = realloc(ar->m, cap * sizeof(*m));
		if (!m)
			return sk_error_set(err, -ENOMEM, "out of memory");
		ar->m = m;
		ar->cap = cap;
	}
	ar->m[ar->n] = *mem;
	if (map_put(&ar->byname, ar->m[ar->n].name, (void *)(uintptr_t)(ar->n + 1)) < 0)
		return sk_error_set(err, -ENOMEM, "out of memory");
	ar->n++;
	*mem = (struct oci_member){0};
	return 0;
}

/* One member of the outer archive: regular files spooled, links kept as names, the rest
 * (directories) ignored. */
static int oci_read_member(struct oci_archive *ar, struct archive *a, struct archive_entry *ae,
                           uint64_t number, uint64_t max, struct sk_error *err)
{
	const char *name = archive_entry_pathname(ae);
	char path[IMG_PATH_MAX + 1], target[IMG_PATH_MAX + 1];
	const char *hard = archive_entry_hardlink(ae);
	mode_t type = archive_entry_filetype(ae);
	const char *sym = type == AE_IFLNK && !hard ? archive_entry_symlink(ae) : NULL;
	int r = tar_check_utf8(number, "name", name ? name : "", err);
	if (r >= 0 && hard)
		r = tar_check_utf8(number, "hard link target", hard, err);
	if (r >= 0 && sym)
		r = tar_check_utf8(number, "symlink target", sym, err);
	if (r >= 0)
		r = tar_path_join("/", name ? name : "", path, sizeof(path), err);
	if (r < 0)
		return r;
	/* checked whole: cut to fit below, "a/b/../b/.." would name another member */
	if (sym && strlen(sym) > IMG_PATH_MAX)
		return sk_error_set(err, -SK_EINVAL_SPEC, "member \"%s\": symlink target too long",
		                    path);
	struct oci_member mem = {0};
	if (hard) {
		r = tar_path_join("/", hard, target, sizeof(target), err);
	} else if (type == AE_IFLNK) {
		/* relative to the link's directory; ".." may climb up to the archive's root */
		char joined[2 * IMG_PATH_MAX + 2];
		size_t dlen = (size_t)(strrchr(path, '/') - path);
		snprintf(joined, sizeof(joined), "%.*s/%s", sym && sym[0] == '/' ? 0 : (int)dlen,
		         path, sym ? sym : "");
		r = tar_path_join("/", joined, target, sizeof(target), err);
	} else if (type != AE_IFREG) {
		return 0;
	} else {
		la_int64_t size = archive_entry_size(ae);
		if (size < 0 || (uint64_t)size > max - ar->bytes)
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "member \"%s\": the archive holds more than %" PRIu64
			                    " bytes",
			                    path, max);
		ar->bytes += (uint64_t)size;
	}
	if (r < 0)
		return r;
	mem.name = strdup(path);
	if (!mem.name)
		return sk_error_set(err, -ENOMEM, "out of memory");
	if (hard || type == AE_IFLNK) {
		mem.link = strdup(target);
		r = mem.link ? 0 : sk_error_set(err, -ENOMEM, "out of memory");
	} else {
		r = oci_spool(ar, a, max, &mem, err);
	}
	if (r >= 0)
		r = oci_member_add(ar, &mem, err);
	free(mem.name);
	free(mem.link);
	return r;
}

static int oci_archive_read(struct oci_archive *ar, int fd, const struct img_limits *lim,
                            struct sk_error *err)
{
	_cleanup_archive_ struct archive *a = NULL;
	int r = tar_open(fd, 0, NULL, &a, err);
	if (r < 0)
		return r;
	uint64_t max = sat_mul(lim->max_bytes, OCI_SPOOL_FACTOR);
	max = max > UINT64_MAX - OCI_METADATA_BYTES ? UINT64_MAX : max + OCI_METADATA_BYTES;
	struct archive_entry *ae;
	size_t members = 0;
	/* what the members declare, data skipped included, and what the stream may hold for them
	 * (as for a layer: a bomb stops at the limit) */
	uint64_t declared = 0, budget = TAR_MEMBER_OVERHEAD_BYTES;
	while ((r = tar_next(a, &ae, err)) > 0) {
		if (++members > OCI_MAX_MEMBERS)
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "the archive holds more than %d members",
			                    OCI_MAX_MEMBERS);
		la_int64_t size = archive_entry_size_is_set(ae) ? archive_entry_size(ae) : 0;
		uint64_t padded = size > 0 ? ((uint64_t)size + 511) & ~(uint64_t)511 : 0;
		declared += padded;
		budget += TAR_MEMBER_OVERHEAD_BYTES + padded;
		if (declared > max || (uint64_t)archive_filter_bytes(a, 0) > budget)
			return sk_error_set(
			    err, -SK_EINVAL_SPEC,
			    "member %zu: the archive is larger than the limits allow", members);
		r = oci_read_member(ar, a, ae, members, max, err);
		if (r < 0)
			return r;
	}
	return r;
}

/* The spooled member at path (links followed), or NULL. */
static struct oci_member *oci_find(struct oci_archive *ar, const char *path)
{
	for (int hop = 0; hop <= OCI_MAX_LINK_HOPS; hop++) {
		uintptr_t i = (uintptr_t)map_get(&ar->byname, path);
		if (!i)
			return NULL;
		struct oci_member *m = &ar->m[i - 1];
		if (!m->link)
			return m;
		path = m->link;
	}
	return NULL;
}

/* The member at name (relative to the archive's root), whose digest must be expect when set. */
static int oci_open(struct oci_archive *ar, const char *name, const char *expect,
                    struct oci_member **ret, struct sk_error *err)
{
	char path[IMG_PATH_MAX + 1];
	int r = tar_path_join("/", name, path, sizeof(path), err);
	if (r < 0)
		return r;
	struct oci_member *m = oci_find(ar, path);
	if (!m)
		return sk_error_set(err, -SK_EINVAL_SPEC, "\"%s\" is not in the archive", name);
	if (expect && strcmp(expect, m->digest) != 0)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "\"%s\": content digest sha256:%s, but sha256:%s expected",
		                    name, m->digest, expect);
	*ret = m;
	return 0;
}

/* Parse a JSON member (at most OCI_JSON_MAX_BYTES). */
static int oci_json(struct oci_archive *ar, const char *name, const char *expect, json_t **ret,
                    struct sk_error *err)
{
	struct oci_member *m;
	int r = oci_open(ar, name, expect, &m, err);
	if (r < 0)
		return r;
	if (m->size > OCI_JSON_MAX_BYTES)
		return sk_error_set(err, -SK_EINVAL_SPEC, "\"%s\": larger than %d bytes", name,
		                    OCI_JSON_MAX_BYTES);
	_cleanup_free_ char *buf = malloc(m->size + 1);
	if (!buf)
		return sk_error_set(err, -ENOMEM, "out of memory");
	size_t got = 0;
	while (got < m->size) {
		ssize_t n = pread(ar->spool_fd, buf + got, m->size - got, (off_t)(m->off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return sk_error_errno(err, n < 0 ? -errno : -EIO, "read spooled \"%s\"",
			                      name);
		got += (size_t)n;
	}
	if (!json_depth_within(buf, got, JSON_MAX_DEPTH))
		return sk_error_set(err, -SK_EINVAL_SPEC, "\"%s\": JSON nested too deep", name);
	json_error_t jerr;
	json_t *j = json_loadb(buf, got, 0, &jerr);
	if (!j)
		return sk_error_set(err, -SK_EINVAL_SPEC, "\"%s\": bad JSON: %s", name, jerr.text);
	*ret = j;
	return 0;
}

#define _cleanup_json_ _cleanup_(json_decrefp)

/* "sha256:<64 hex>" → the hex, or NULL. */
static const char *oci_digest_hex(json_t *v)
{
	const char *d = json_string_value(v);
	if (!d || strncmp(d, "sha256:", 7) != 0 || !img_digest_valid(d + 7))
		return NULL;
	return d + 7;
}

/* The blob path of an OCI layout for a descriptor's digest. */
static int oci_blob_name(json_t *desc, const char *what, char *out, size_t size,
                         const char **ret_hex, struct sk_error *err)
{
	const char *hex = oci_digest_hex(json_object_get(desc, "digest"));
	if (!hex)
		return sk_error_set(err, -SK_EINVAL_SPEC, "%s: no sha256 digest", what);
	snprintf(out, size, "blobs/sha256/%s", hex);
	*ret_hex = hex;
	return 0;
}

static int media_type_is_index(json_t *desc)
{
	const char *t = json_string_value(json_object_get(desc, "mediaType"));
	return t && (strcmp(t, "application/vnd.oci.image.index.v1+json") == 0 ||
	             strcmp(t, "application/vnd.docker.distribution.manifest.list.v2+json") == 0);
}

/* The one image descriptor of an index: entries naming the same digest count once, and build
 * attestations (which are not images to run) are skipped. */
static int oci_index_pick(json_t *index, const char *what, json_t **ret, struct sk_error *err)
{
	json_t *list = json_object_get(index, "manifests"), *d, *pick = NULL;
	size_t i;
	if (!json_is_array(list))
		return sk_error_set(err, -SK_EINVAL_SPEC, "%s: no manifests", what);
	json_array_foreach (list, i, d) {
		const char *ref = json_string_value(json_object_get(
		    json_object_get(d, "annotations"), "vnd.docker.reference.type"));
		if (ref && strcmp(ref, "attestation-manifest") == 0)
			continue;
		const char *hex = oci_digest_hex(json_object_get(d, "digest"));
		if (!hex)
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "%s: manifest %zu has no sha256 digest", what, i);
		if (pick && strcmp(hex, oci_digest_hex(json_object_get(pick, "digest"))) != 0)
			return sk_error_set(
			    err, -SK_EINVAL_SPEC,
			    "%s: the archive holds several images; import one at a time", what);
		pick = d;
	}
	if (!pick)
		return sk_error_set(err, -SK_EINVAL_SPEC, "%s: no image", what);
	*ret = pick;
	return 0;
}

/* The layer list of an import: member names and the digests they must have ("" unchecked). */
struct oci_plan {
	char config[IMG_PATH_MAX + 1];
	char config_digest[IMG_DIGEST_HEX];
	size_t nlayers;
	char (*layers)[IMG_PATH_MAX + 1];
	char (*digests)[IMG_DIGEST_HEX];
};

static int oci_plan_layers(struct oci_plan *p, size_t n, struct sk_error *err)
{
	if (n > OCI_MAX_LAYERS)
		return sk_error_set(err, -SK_EINVAL_SPEC, "more than %d layers", OCI_MAX_LAYERS);
	p->nlayers = n;
	p->layers = calloc(n ? n : 1, sizeof(*p->layers));
	p->digests = calloc(n ? n : 1, sizeof(*p->digests));
	if (!p->layers || !p->digests)
		return sk_error_set(err, -ENOMEM, "out of memory");
	return 0;
}

/* An OCI image layout: index.json → (an index →) a manifest → config and layers. */
static int oci_plan_layout(struct oci_archive *ar, struct oci_plan *p, struct sk_error *err)
{
	_cleanup_json_ json_t *index = NULL, *inner = NULL, *manifest = NULL;
	int r = oci_json(ar, "index.json", NULL, &index, err);
	if (r < 0)
		return r;
	json_t *desc;
	r = oci_index_pick(index, "index.json", &desc, err);
	if (r < 0)
		return r;
	char name[IMG_PATH_MAX + 1];
	const char *hex = NULL;
	r = oci_blob_name(desc, "index.json", name, sizeof(name), &hex, err);
	if (r >= 0)
		r = oci_json(ar, name, hex, &inner, err);
	if (r < 0)
		return r;
	/* an index (by its media type, or by its content where the descriptor has none) is
	 * followed one level down */
	if (media_type_is_index(desc) || json_object_get(inner, "manifests")) {
		r = oci_index_pick(inner, name, &desc, err);
		if (r >= 0)
			r = oci_blob_name(desc, name, name, sizeof(name), &hex, err);
		if (r >= 0)
			r = oci_json(ar, name, hex, &manifest, err);
		if (r >= 0 && (media_type_is_index(desc) || json_object_get(manifest, "manifests")))
			r = sk_error_set(err, -SK_EINVAL_SPEC, "%s: an index of indexes", name);
		if (r < 0)
			return r;
	} else {
		manifest = TAKE_PTR(inner);
	}
	json_t *layers = json_object_get(manifest, "layers"), *l;
	if (!json_is_array(layers))
		return sk_error_set(err, -SK_EINVAL_SPEC, "manifest %s: no layers", name);
	r = oci_blob_name(json_object_get(manifest, "config"), "manifest config", p->config,
	                  sizeof(p->config), &hex, err);
	if (r < 0)
		return r;
	memcpy(p->config_digest, hex, IMG_DIGEST_HEX);
	r = oci_plan_layers(p, json_array_size(layers), err);
	size_t i;
	json_array_foreach (layers, i, l) {
		if (r < 0)
			break;
		r = oci_blob_name(l, "manifest layer", p->layers[i], sizeof(p->layers[i]), &hex,
		                  err);
		if (r >= 0)
			memcpy(p->digests[i], hex, IMG_DIGEST_HEX);
	}
	return r;
}

/* The digest a docker save member name states: "blobs/sha256/<hex>" or "<hex>.json". */
static void docker_name_digest(const char *name, char out[IMG_DIGEST_HEX])
{
	const char *base = strrchr(name, '/');
	base = base ? base + 1 : name;
	size_t len = strlen(base);
	out[0] = '\0';
	if (len >= IMG_DIGEST_HEX - 1 && len <= IMG_DIGEST_HEX - 1 + 5) {
		char hex[IMG_DIGEST_HEX];
		memcpy(hex, base, IMG_DIGEST_HEX - 1);
		hex[IMG_DIGEST_HEX - 1] = '\0';
		const char *rest = base + IMG_DIGEST_HEX - 1;
		if (img_digest_valid(hex) && (!*rest || strcmp(rest, ".json") == 0))
			memcpy(out, hex, IMG_DIGEST_HEX);
	}
}

/* docker save output: manifest.json names the config and the layers (old saves:
 * "<id>/layer.tar", uncompressed, so the config's rootfs.diff_ids are their digests). */
static int oci_plan_docker(struct oci_archive *ar, struct oci_plan *p, struct sk_error *err)
{
	_cleanup_json_ json_t *list = NULL;
	int r = oci_json(ar, "manifest.json", NULL, &list, err);
	if (r < 0)
		return r;
	if (!json_is_array(list) || json_array_size(list) == 0)
		return sk_error_set(err, -SK_EINVAL_SPEC, "manifest.json: no image");
	if (json_array_size(list) > 1)
		return sk_error_set(
		    err, -SK_EINVAL_SPEC,
		    "manifest.json: the archive holds several images; import one at "
		    "a time");
	json_t *img = json_array_get(list, 0), *layers = json_object_get(img, "Layers"), *l;
	const char *config = json_string_value(json_object_get(img, "Config"));
	if (!config || !json_is_array(layers))
		return sk_error_set(err, -SK_EINVAL_SPEC, "manifest.json: no Config or Layers");
	snprintf(p->config, sizeof(p->config), "%s", config);
	docker_name_digest(config, p->config_digest);
	r = oci_plan_layers(p, json_array_size(layers), err);
	size_t i;
	json_array_foreach (layers, i, l) {
		if (r < 0)
			break;
		const char *name = json_string_value(l);
		if (!name)
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "manifest.json: layer %zu: no path", i);
		snprintf(p->layers[i], sizeof(p->layers[i]), "%s", name);
		docker_name_digest(name, p->digests[i]);
	}
	return r;
}

/* Old saves name layers by an id, not their digest: take the config's diff_ids instead. */
static void oci_plan_diff_ids(struct oci_plan *p, json_t *config)
{
	json_t *ids = json_object_get(json_object_get(config, "rootfs"), "diff_ids");
	if (json_array_size(ids) != p->nlayers)
		return;
	for (size_t i = 0; i < p->nlayers; i++) {
		const char *hex = oci_digest_hex(json_array_get(ids, i));
		if (!p->digests[i][0] && hex)
			memcpy(p->digests[i], hex, IMG_DIGEST_HEX);
	}
}

static int config_strings(json_t *v, const char *what, char ***ret, size_t *ret_n,
                          struct sk_error *err)
{
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_array(v) || json_array_size(v) > OCI_CONFIG_MAX_STRINGS)
		return sk_error_set(err, -SK_EINVAL_SPEC, "config: %s is not a list of strings",
		                    what);
	size_t n = json_array_size(v);
	char **out = calloc(n + 1, sizeof(*out));
	if (!out)
		return sk_error_set(err, -ENOMEM, "out of memory");
	*ret = out;
	for (size_t i = 0; i < n; i++) {
		const char *s = json_string_value(json_array_get(v, i));
		if (!s)
			return sk_error_set(err, -SK_EINVAL_SPEC, "config: %s[%zu] is not a string",
			                    what, i);
		out[i] = strdup(s);
		if (!out[i])
			return sk_error_set(err, -ENOMEM, "out of memory");
		*ret_n = i + 1;
	}
	return 0;
}

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

void img_config_free(struct img_config *c)
{
	if (!c)
		return;
	strv_free(c->env, c->nenv);
	free(c->workdir);
	strv_free(c->entrypoint, c->nentrypoint);
	strv_free(c->cmd, c->ncmd);
	*c = (struct img_config){0};
}

static int config_parse(json_t *root, struct img_config *c, struct sk_error *err)
{
	json_t *cfg = json_object_get(root, "config");
	if (!cfg || json_is_null(cfg))
		return 0;
	if (!json_is_object(cfg))
		return sk_error_set(err, -SK_EINVAL_SPEC, "config: \"config\" is not an object");
	int r = config_strings(json_object_get(cfg, "Env"), "Env", &c->env, &c->nenv, err);
	if (r >= 0)
		r = config_strings(json_object_get(cfg, "Entrypoint"), "Entrypoint", &c->entrypoint,
		                   &c->nentrypoint, err);
	if (r >= 0)
		r = config_strings(json_object_get(cfg, "Cmd"), "Cmd", &c->cmd, &c->ncmd, err);
	json_t *wd = json_object_get(cfg, "WorkingDir");
	if (r >= 0 && wd && !json_is_null(wd)) {
		if (!json_is_string(wd))
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "config: WorkingDir is not a string");
		c->workdir = strdup(json_string_value(wd));
		if (!c->workdir)
			return sk_error_set(err, -ENOMEM, "out of memory");
	}
	return r;
}

/* The layers in order onto an image holding only "/". */
static int oci_apply_layers(struct oci_archive *ar, struct oci_plan *p,
                            const struct img_limits *lim, struct img_manifest *image,
                            struct sk_error *err)
{
	struct img_entry root = {.path = "/", .type = IMG_DIR, .mode = 0755};
	int r = img_manifest_add(image, &root, err);
	/* Each layer is within the limits, and all of them together within OCI_SPOOL_FACTOR times
	 * them (later layers may remove what earlier ones wrote, but not without bound): else 256
	 * layers could each write the image's byte limit in blobs, a compressed few MiB apiece. */
	uint64_t max_bytes = sat_mul(lim->max_bytes, OCI_SPOOL_FACTOR);
	uint64_t max_files = sat_mul(lim->max_files, OCI_SPOOL_FACTOR);
	uint64_t bytes = 0, files = 0;
	for (size_t i = 0; i < p->nlayers && r >= 0; i++) {
		struct img_limits ll = *lim;
		if (ll.max_bytes > max_bytes - bytes)
			ll.max_bytes = max_bytes - bytes;
		if (ll.max_files > max_files - files)
			ll.max_files = max_files - files;
		struct oci_member *m;
		r = oci_open(ar, p->layers[i], p->digests[i][0] ? p->digests[i] : NULL, &m, err);
		if (r < 0)
			return sk_error_prefix(err, "layer %zu", i + 1);
		struct img_manifest layer;
		img_manifest_init(&layer);
		_cleanup_archive_ struct archive *a = NULL;
		r = tar_open(ar->spool_fd, m->off, &m->size, &a, err);
		struct img_tar_stats st;
		if (r >= 0)
			r = tar_layer_read(ar->s, a, "/", IMG_TAR_WHITEOUTS, &ll, &layer, &st, err);
		if (r < 0 && (ll.max_bytes < lim->max_bytes || ll.max_files < lim->max_files))
			sk_error_prefix(err,
			                "the layers together may hold %" PRIu64 " bytes in %" PRIu64
			                " members",
			                max_bytes, max_files);
		if (r < 0)
			return sk_error_prefix(err, "layer %zu (%s)", i + 1, p->layers[i]);
		bytes += st.bytes;
		files += st.members;
		r = img_manifest_apply(image, &layer, err);
		img_manifest_free(&layer);
		if (r < 0)
			return sk_error_prefix(err, "layer %zu (%s)", i + 1, p->layers[i]);
	}
	if (r >= 0)
		r = img_manifest_check(image, 0, lim, err);
	return r;
}

static int oci_import(struct oci_archive *ar, const struct img_limits *lim,
                      struct img_manifest *image, struct img_config *cfg, struct sk_error *err)
{
	struct oci_plan p = {0};
	_cleanup_json_ json_t *config = NULL;
	int r;
	char probe[IMG_PATH_MAX + 1];
	if (tar_path_join("/", "index.json", probe, sizeof(probe), err) >= 0 && oci_find(ar, probe))
		r = oci_plan_layout(ar, &p, err);
	else if (tar_path_join("/", "manifest.json", probe, sizeof(probe), err) >= 0 &&
	         oci_find(ar, probe))
		r = oci_plan_docker(ar, &p, err);
	else
		r = sk_error_set(err, -SK_EINVAL_SPEC,
		                 "neither an OCI image layout (index.json) nor docker save output "
		                 "(manifest.json)");
	if (r >= 0)
		r = oci_json(ar, p.config, p.config_digest[0] ? p.config_digest : NULL, &config,
		             err);
	if (r >= 0) {
		oci_plan_diff_ids(&p, config);
		r = config_parse(config, cfg, err);
	}
	if (r >= 0)
		r = oci_apply_layers(ar, &p, lim, image, err);
	free(p.layers);
	free(p.digests);
	return r;
}

int img_oci_import(struct img_store *s, int fd, const struct img_limits *lim,
                   struct img_manifest *image, struct img_config *cfg, struct sk_error *err)
{
	if (!lim)
		lim = &img_default_limits;
	struct oci_archive ar = {.s = s, .spool_fd = -1};
	map_init(&ar.byname);
	struct img_manifest m;
	img_manifest_init(&m);
	struct img_config c = {0};
	int r = oci_archive_read(&ar, fd, lim, err);
	if (r >= 0)
		r = oci_import(&ar, lim, &m, &c, err);
	oci_archive_release(&ar);
	if (r < 0) {
		img_manifest_free(&m);
		img_config_free(&c);
		return msg_utf8(err, sk_error_prefix(err, "import image"));
	}
	*image = m;
	*cfg = c;
	return 0;
}
