/* Image manifests: the entries, their checks, their canonical JSON and applying a layer. The JSON
 * is what an image's digest is taken over, so encoding is deterministic (fixed key order, defaults
 * omitted, entries sorted) and decoding, fed by clients, refuses anything it does not know. */
#include "manifest.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/encoding.h"
#include "../lib/jsonlim.h"
#include "../lib/map.h"
#include "store_internal.h"

#define MANIFEST_VERSION 1
/* A manifest of max_files entries stays well below this; the parser's memory is several times
 * the text's size, so the text itself is capped too. */
#define IMG_MANIFEST_MAX_BYTES (512ULL * 1024 * 1024)

const struct img_limits img_default_limits = {
    .max_files = 2000000,
    .max_bytes = 64ULL << 30,
    .max_file_bytes = 16ULL << 30,
    .max_xattr_bytes = 64 << 10,
    /* Half the text a manifest may be: its JSON (xattrs in base64) stays loadable. */
    .max_meta_bytes = IMG_MANIFEST_MAX_BYTES / 2,
};

static const char *const TYPE_NAMES[] = {
    [IMG_REG] = "reg", [IMG_DIR] = "dir",   [IMG_SYMLINK] = "symlink", [IMG_CHR] = "chr",
    [IMG_BLK] = "blk", [IMG_FIFO] = "fifo", [IMG_SOCK] = "sock",       [IMG_WHITEOUT] = "whiteout",
};

void img_manifest_init(struct img_manifest *m)
{
	memset(m, 0, sizeof(*m));
}

static void entry_release(struct img_entry *e)
{
	free(e->path);
	free(e->target);
	for (size_t i = 0; i < e->nxattrs; i++) {
		free(e->xattrs[i].name);
		free(e->xattrs[i].value);
	}
	free(e->xattrs);
	memset(e, 0, sizeof(*e));
}

void img_manifest_remove(struct img_manifest *m, const struct img_entry *e)
{
	size_t i = (size_t)(e - m->e);
	entry_release(&m->e[i]);
	memmove(&m->e[i], &m->e[i + 1], (m->n - i - 1) * sizeof(*m->e));
	m->n--;
}

void img_manifest_free(struct img_manifest *m)
{
	for (size_t i = 0; i < m->n; i++)
		entry_release(&m->e[i]);
	free(m->e);
	img_manifest_init(m);
}

static int entry_copy(struct img_entry *dst, const struct img_entry *src)
{
	*dst = *src;
	dst->path = NULL;
	dst->target = NULL;
	dst->xattrs = NULL;
	dst->nxattrs = 0;
	dst->path = strdup(src->path ? src->path : "");
	if (!dst->path)
		goto fail;
	if (src->target && !(dst->target = strdup(src->target)))
		goto fail;
	if (src->nxattrs) {
		dst->xattrs = calloc(src->nxattrs, sizeof(*dst->xattrs));
		if (!dst->xattrs)
			goto fail;
		for (size_t i = 0; i < src->nxattrs; i++) {
			struct img_xattr *x = &dst->xattrs[i];
			dst->nxattrs = i + 1;
			x->name = strdup(src->xattrs[i].name ? src->xattrs[i].name : "");
			x->value = malloc(src->xattrs[i].len ? src->xattrs[i].len : 1);
			if (!x->name || !x->value)
				goto fail;
			memcpy(x->value, src->xattrs[i].value, src->xattrs[i].len);
			x->len = src->xattrs[i].len;
		}
	}
	return 0;
fail:
	entry_release(dst);
	return -ENOMEM;
}

/* Room for one more entry, zeroed. */
static struct img_entry *manifest_grow(struct img_manifest *m)
{
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 64;
		struct img_entry *e = realloc(m->e, cap * sizeof(*e));
		if (!e)
			return NULL;
		m->e = e;
		m->cap = cap;
	}
	memset(&m->e[m->n], 0, sizeof(m->e[0]));
	return &m->e[m->n];
}

int img_manifest_add(struct img_manifest *m, const struct img_entry *e, struct sk_error *err)
{
	struct img_entry *d = manifest_grow(m);
	if (!d || entry_copy(d, e) < 0)
		return sk_error_set(err, -ENOMEM, "manifest: out of memory");
	m->n++;
	return 0;
}

static int entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct img_entry *)a)->path, ((const struct img_entry *)b)->path);
}

int img_manifest_sort(struct img_manifest *m, struct sk_error *err)
{
	if (m->n > 1)
		qsort(m->e, m->n, sizeof(m->e[0]), entry_cmp);
	for (size_t i = 1; i < m->n; i++)
		if (strcmp(m->e[i - 1].path, m->e[i].path) == 0)
			return sk_error_set(err, -EEXIST, "manifest: path \"%s\" is there twice",
			                    m->e[i].path);
	return 0;
}

/* The index of the first entry whose path is not below key in byte order. */
static size_t manifest_lower_bound(const struct img_manifest *m, const char *key)
{
	size_t lo = 0, hi = m->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(m->e[mid].path, key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

const struct img_entry *img_manifest_find(const struct img_manifest *m, const char *path)
{
	size_t i = manifest_lower_bound(m, path);
	return i < m->n && strcmp(m->e[i].path, path) == 0 ? &m->e[i] : NULL;
}

int img_path_valid(const char *path)
{
	if (!path || path[0] != '/')
		return 0;
	size_t len = strlen(path);
	if (len > IMG_PATH_MAX)
		return 0;
	if (len == 1)
		return 1;
	if (path[len - 1] == '/')
		return 0;
	/* Each component: non-empty, not "." or "..". */
	size_t depth = 0;
	for (const char *c = path + 1;;) {
		const char *end = strchr(c, '/');
		size_t n = end ? (size_t)(end - c) : strlen(c);
		if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return 0;
		if (++depth > IMG_PATH_DEPTH_MAX)
			return 0;
		if (!end)
			return 1;
		c = end + 1;
	}
}

/* The parent of a valid path other than "/" into buf (IMG_PATH_MAX + 1 bytes). */
static void path_parent(const char *path, char *buf)
{
	const char *slash = strrchr(path, '/');
	size_t n = slash == path ? 1 : (size_t)(slash - path);
	memcpy(buf, path, n);
	buf[n] = '\0';
}

static int str_utf8(const char *s)
{
	return utf8_valid((const unsigned char *)s, strlen(s));
}

int img_xattr_is_overlay(const char *name)
{
	return strncmp(name, "user.overlay.", 13) == 0 ||
	       strncmp(name, "trusted.overlay.", 16) == 0;
}

/* The fields of one entry against its type; NULL when consistent, else why not. */
static const char *entry_problem(const struct img_entry *e, int layer, const struct img_limits *lim)
{
	if (!img_path_valid(e->path))
		return "path is not absolute and normalized, or deeper than 256";
	if (!str_utf8(e->path))
		return "path is not valid UTF-8";
	if ((unsigned)e->type > IMG_WHITEOUT)
		return "unknown type";
	if (e->type == IMG_WHITEOUT && !layer)
		return "a whiteout outside a layer";
	if (e->type == IMG_WHITEOUT && strcmp(e->path, "/") == 0)
		return "the root directory cannot be a whiteout";
	if (strcmp(e->path, "/") == 0 && e->type != IMG_DIR)
		return "the root is not a directory";
	if (e->mode & ~07777u)
		return "mode has bits beyond 07777";
	if (e->mtime_nsec >= 1000000000u)
		return "mtime nanoseconds out of range";
	if (e->type == IMG_REG) {
		if (!img_digest_valid(e->digest))
			return "regular file without a valid digest";
		if (e->size > lim->max_file_bytes)
			return "file larger than the limit";
	} else if (e->digest[0] != '\0' || e->size != 0) {
		return "digest or size on a non-regular file";
	}
	if (e->type == IMG_SYMLINK) {
		if (!e->target || !e->target[0] || strlen(e->target) > IMG_PATH_MAX)
			return "symlink target empty or too long";
		if (!str_utf8(e->target))
			return "symlink target is not valid UTF-8";
	} else if (e->target) {
		return "target on a non-symlink";
	}
	if (e->type != IMG_CHR && e->type != IMG_BLK && (e->rdev_major || e->rdev_minor))
		return "device numbers on a non-device";
	if (e->opaque && (!layer || e->type != IMG_DIR))
		return "opaque outside a layer's directory";
	if (e->type == IMG_WHITEOUT && e->nxattrs)
		return "xattrs on a whiteout";
	uint64_t xbytes = 0;
	for (size_t i = 0; i < e->nxattrs; i++) {
		const struct img_xattr *x = &e->xattrs[i];
		if (!x->name || !x->name[0] || strlen(x->name) > IMG_XATTR_NAME_MAX)
			return "xattr name empty or too long";
		if (!str_utf8(x->name))
			return "xattr name is not valid UTF-8";
		if (img_xattr_is_overlay(x->name))
			return "an overlayfs attribute (user.overlay.*, trusted.overlay.*)";
		if (x->len > IMG_XATTR_VALUE_MAX || (x->len && !x->value))
			return "xattr value too long";
		if (i > 0 && strcmp(e->xattrs[i - 1].name, x->name) >= 0)
			return "xattrs not sorted by name or a name twice";
		xbytes += strlen(x->name) + x->len;
	}
	if (xbytes > lim->max_xattr_bytes)
		return "xattrs larger than the limit";
	return NULL;
}

/* In an image every parent is a directory of the manifest; in a layer a parent the layer holds
 * must be a directory (a whiteout or file cannot have children). */
static const char *parent_problem(const struct img_manifest *m, const struct img_entry *e,
                                  int layer)
{
	if (strcmp(e->path, "/") == 0)
		return NULL;
	char parent[IMG_PATH_MAX + 1];
	path_parent(e->path, parent);
	const struct img_entry *p = img_manifest_find(m, parent);
	if (!p)
		return layer ? NULL : "parent directory missing";
	if (p->type != IMG_DIR)
		return "parent is not a directory";
	return NULL;
}

int img_manifest_check(const struct img_manifest *m, int layer, const struct img_limits *lim,
                       struct sk_error *err)
{
	if (!lim)
		lim = &img_default_limits;
	if (m->n > lim->max_files)
		return sk_error_set(err, -SK_EINVAL_SPEC, "manifest: %zu entries, more than %llu",
		                    m->n, (unsigned long long)lim->max_files);
	if (!layer && (m->n == 0 || strcmp(m->e[0].path, "/") != 0))
		return sk_error_set(err, -SK_EINVAL_SPEC, "manifest: no root directory \"/\"");
	uint64_t total = 0;
	for (size_t i = 0; i < m->n; i++) {
		const struct img_entry *e = &m->e[i];
		const char *why = entry_problem(e, layer, lim);
		if (!why && i > 0 && strcmp(m->e[i - 1].path, e->path) >= 0)
			why = "entries not sorted by path, or a path twice";
		if (!why)
			why = parent_problem(m, e, layer);
		if (!why && e->type == IMG_REG) {
			total += e->size;
			if (total > lim->max_bytes)
				why = "files larger than the limit in all";
		}
		if (why)
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "manifest entry %zu \"%.200s\": %s", i,
			                    e->path ? e->path : "", why);
	}
	return 0;
}

/* ---- canonical JSON ---- */

static int obj_set_u64(json_t *o, const char *key, uint64_t v)
{
	return v ? json_object_set_new(o, key, json_integer((json_int_t)v)) : 0;
}

static json_t *entry_to_json(const struct img_entry *e)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	int r = json_object_set_new(o, "path", json_string(e->path));
	r |= json_object_set_new(o, "type", json_string(TYPE_NAMES[e->type]));
	r |= obj_set_u64(o, "mode", e->mode);
	r |= obj_set_u64(o, "uid", e->uid);
	r |= obj_set_u64(o, "gid", e->gid);
	r |= obj_set_u64(o, "size", e->size);
	if (e->type == IMG_REG)
		r |= json_object_set_new(o, "digest", json_string(e->digest));
	if (e->mtime_sec)
		r |= json_object_set_new(o, "mtime", json_integer(e->mtime_sec));
	r |= obj_set_u64(o, "mtime_nsec", e->mtime_nsec);
	if (e->target)
		r |= json_object_set_new(o, "target", json_string(e->target));
	r |= obj_set_u64(o, "major", e->rdev_major);
	r |= obj_set_u64(o, "minor", e->rdev_minor);
	if (e->opaque)
		r |= json_object_set_new(o, "opaque", json_true());
	if (e->nxattrs) {
		json_t *x = json_object();
		r |= json_object_set_new(o, "xattrs", x);
		for (size_t i = 0; x && i < e->nxattrs; i++) {
			char *b64 = malloc(base64_encoded_size(e->xattrs[i].len));
			if (!b64) {
				r = -1;
				break;
			}
			base64_encode(e->xattrs[i].value, e->xattrs[i].len, b64);
			r |= json_object_set_new(x, e->xattrs[i].name, json_string(b64));
			free(b64);
		}
	}
	if (r) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* A growing text, for encoding. */
struct text {
	char *p;
	size_t len, cap;
};

static int text_add(struct text *t, const char *s, size_t n)
{
	if (n > t->cap - t->len) {
		size_t cap = t->cap ? t->cap : 4096;
		while (cap - t->len < n)
			cap *= 2;
		char *p = realloc(t->p, cap);
		if (!p)
			return -1;
		t->p = p;
		t->cap = cap;
	}
	memcpy(t->p + t->len, s, n);
	t->len += n;
	return 0;
}

static int text_add_cb(const char *s, size_t n, void *t)
{
	return text_add(t, s, n);
}

/* Each entry is dumped on its own, with the flags and separators a dump of the whole document
 * would use (the bytes are the same: they name the image), so that encoding never holds the
 * whole manifest as a JSON tree (over a kilobyte per entry). */
int img_manifest_encode(const struct img_manifest *m, char **ret, size_t *ret_len,
                        struct sk_error *err)
{
	/* Encode only what decode would take back: the bytes name the image. Checked as a layer,
	 * as img_manifest_load decodes: a layer may hold "/" and still lack parents (a guess from
	 * its entries refused such a layer as an image with parents missing). */
	struct img_limits nolimit = {UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX};
	int r = img_manifest_check(m, 1, &nolimit, err);
	if (r < 0)
		return sk_error_prefix(err, "encode");
	struct text t = {0};
	char head[64];
	int hn = snprintf(head, sizeof(head), "{\"version\":%d,\"entries\":[", MANIFEST_VERSION);
	r = text_add(&t, head, (size_t)hn);
	for (size_t i = 0; r == 0 && i < m->n; i++) {
		json_t *o = entry_to_json(&m->e[i]);
		r = !o || (i > 0 && text_add(&t, ",", 1) < 0) ||
		            json_dump_callback(o, text_add_cb, &t,
		                               JSON_COMPACT | JSON_PRESERVE_ORDER) < 0
		        ? -1
		        : 0;
		json_decref(o);
	}
	if (r == 0)
		r = text_add(&t, "]}", 3); /* the NUL too */
	if (r < 0) {
		free(t.p);
		return sk_error_set(err, -ENOMEM, "encode manifest: out of memory");
	}
	*ret_len = t.len - 1;
	*ret = t.p;
	return 0;
}

/* One integer field of at most max (0 when absent); a message when it is anything else. */
static const char *json_u64(json_t *o, const char *key, uint64_t max, uint64_t *ret)
{
	json_t *v = json_object_get(o, key);
	*ret = 0;
	if (!v)
		return NULL;
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) > max)
		return "an integer field is out of range or not an integer";
	*ret = (uint64_t)json_integer_value(v);
	return NULL;
}

static const char *const ENTRY_KEYS[] = {"path",  "type",   "mode",   "uid",        "gid",
                                         "size",  "digest", "mtime",  "mtime_nsec", "target",
                                         "major", "minor",  "opaque", "xattrs"};

static const char *xattrs_from_json(json_t *x, struct img_entry *e)
{
	if (!json_is_object(x))
		return "xattrs is not an object";
	size_t n = json_object_size(x);
	if (n == 0)
		return "xattrs is empty (omit it)";
	if (n > IMG_XATTR_VALUE_MAX)
		return "too many xattrs";
	e->xattrs = calloc(n, sizeof(*e->xattrs));
	if (!e->xattrs)
		return "out of memory";
	const char *key;
	json_t *v;
	json_object_foreach (x, key, v) {
		if (!json_is_string(v))
			return "an xattr value is not a string";
		size_t len = json_string_length(v);
		if (len > base64_encoded_size(IMG_XATTR_VALUE_MAX))
			return "an xattr value is too long";
		struct img_xattr *xa = &e->xattrs[e->nxattrs++];
		xa->name = strdup(key);
		xa->value = malloc(len / 4 * 3 + 1);
		if (!xa->name || !xa->value)
			return "out of memory";
		long got = base64_decode(json_string_value(v), len, xa->value);
		if (got < 0)
			return "an xattr value is not base64";
		xa->len = (size_t)got;
	}
	return NULL;
}

/* Fill e from o; a message when o is not a well-formed entry (the checks of the values
 * themselves are img_manifest_check's). */
static const char *entry_from_json(json_t *o, struct img_entry *e)
{
	if (!json_is_object(o))
		return "not an object";
	json_t *path = json_object_get(o, "path");
	if (!json_is_string(path) || json_string_length(path) > IMG_PATH_MAX)
		return "path missing, not a string or too long";
	if (strlen(json_string_value(path)) != json_string_length(path))
		return "path holds a NUL";
	if (!(e->path = strdup(json_string_value(path))))
		return "out of memory";
	const char *key;
	json_t *v;
	json_object_foreach (o, key, v) {
		size_t k = 0;
		while (k < ARRAY_SIZE(ENTRY_KEYS) && strcmp(key, ENTRY_KEYS[k]) != 0)
			k++;
		if (k == ARRAY_SIZE(ENTRY_KEYS))
			return "unknown key";
	}
	json_t *type = json_object_get(o, "type");
	if (!json_is_string(type))
		return "type missing or not a string";
	size_t t = 0;
	while (t < ARRAY_SIZE(TYPE_NAMES) && strcmp(json_string_value(type), TYPE_NAMES[t]) != 0)
		t++;
	if (t == ARRAY_SIZE(TYPE_NAMES))
		return "unknown type";
	e->type = (enum img_type)t;
	uint64_t u;
	const char *why;
	if ((why = json_u64(o, "mode", 07777, &u)))
		return why;
	e->mode = (uint32_t)u;
	if ((why = json_u64(o, "uid", UINT32_MAX, &u)))
		return why;
	e->uid = (uint32_t)u;
	if ((why = json_u64(o, "gid", UINT32_MAX, &u)))
		return why;
	e->gid = (uint32_t)u;
	if ((why = json_u64(o, "size", INT64_MAX, &e->size)))
		return why;
	if ((why = json_u64(o, "mtime_nsec", 999999999, &u)))
		return why;
	e->mtime_nsec = (uint32_t)u;
	if ((why = json_u64(o, "major", UINT32_MAX, &u)))
		return why;
	e->rdev_major = (uint32_t)u;
	if ((why = json_u64(o, "minor", UINT32_MAX, &u)))
		return why;
	e->rdev_minor = (uint32_t)u;
	json_t *mtime = json_object_get(o, "mtime");
	if (mtime && !json_is_integer(mtime))
		return "mtime is not an integer";
	e->mtime_sec = mtime ? json_integer_value(mtime) : 0;
	json_t *digest = json_object_get(o, "digest");
	if (digest && (!json_is_string(digest) || !img_digest_valid(json_string_value(digest))))
		return "digest is not 64 lowercase hex digits";
	if (digest)
		memcpy(e->digest, json_string_value(digest), IMG_DIGEST_HEX);
	json_t *target = json_object_get(o, "target");
	if (target) {
		if (!json_is_string(target) || json_string_length(target) > IMG_PATH_MAX ||
		    strlen(json_string_value(target)) != json_string_length(target))
			return "target not a string, too long or holding a NUL";
		if (!(e->target = strdup(json_string_value(target))))
			return "out of memory";
	}
	json_t *opaque = json_object_get(o, "opaque");
	if (opaque && !json_is_true(opaque))
		return "opaque is not true (omit it when false)";
	e->opaque = opaque != NULL;
	json_t *x = json_object_get(o, "xattrs");
	if (x && (why = xattrs_from_json(x, e)))
		return why;
	return NULL;
}

static size_t json_skip_ws(const char *s, size_t len, size_t i)
{
	while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
		i++;
	return i;
}

/* The literal token at s[*pos] (after whitespace) is tok: *pos moves past it. */
static int json_take(const char *s, size_t len, size_t *pos, const char *tok)
{
	size_t i = json_skip_ws(s, len, *pos), n = strlen(tok);
	if (len - i < n || memcmp(s + i, tok, n) != 0)
		return 0;
	*pos = i + n;
	return 1;
}

/* The entries array, from just after its '[' to just after its ']', one entry at a time: each is
 * parsed alone and dropped once copied, so the parser's memory (a kilobyte and more per entry)
 * never holds more than one, and a count past the limit is refused as soon as it is reached. */
static int entries_decode(const char *json, size_t len, size_t *pos, const struct img_limits *lim,
                          struct img_manifest *m, struct sk_error *err)
{
	if (json_take(json, len, pos, "]"))
		return 0;
	for (size_t i = 0;; i++) {
		if (i >= lim->max_files)
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "manifest: more than %llu entries",
			                    (unsigned long long)lim->max_files);
		json_error_t jerr;
		size_t at = json_skip_ws(json, len, *pos);
		json_t *o = json_loadb(json + at, len - at,
		                       JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES, &jerr);
		if (!o)
			return sk_error_set(
			    err, -SK_EINVAL_SPEC, "manifest entry %zu: bad JSON at byte %zu: %s", i,
			    at + (size_t)(jerr.position > 0 ? jerr.position : 0), jerr.text);
		*pos = at + (size_t)jerr.position;
		struct img_entry *e = manifest_grow(m);
		if (!e) {
			json_decref(o);
			return sk_error_set(err, -ENOMEM, "manifest: out of memory");
		}
		m->n++; /* counted now so that a half-filled entry is freed */
		const char *why = entry_from_json(o, e);
		json_decref(o);
		if (why)
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "manifest entry %zu \"%.200s\": %s", i,
			                    e->path ? e->path : "", why);
		if (json_take(json, len, pos, "]"))
			return 0;
		if (!json_take(json, len, pos, ","))
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "manifest: bad JSON after entry %zu (byte %zu)", i,
			                    *pos);
	}
}

/* The version, a plain non-negative integer (no fraction, no exponent) of at most 9 digits. */
static int version_decode(const char *json, size_t len, size_t *pos, long *ret)
{
	size_t i = json_skip_ws(json, len, *pos), start = i;
	long v = 0;
	while (i < len && json[i] >= '0' && json[i] <= '9' && i - start < 9)
		v = v * 10 + (json[i++] - '0');
	if (i == start || (i < len && json[i] >= '0' && json[i] <= '9') ||
	    (json[start] == '0' && i - start > 1))
		return 0; /* none, too many, or a leading zero (not JSON) */
	*ret = v;
	*pos = i;
	return 1;
}

/* The manifest's outer object, {"version":1,"entries":[...]} (the keys in either order,
 * whitespace anywhere JSON allows it, the keys written plainly), read by hand around the
 * entries so that the whole text is never one parsed tree. */
static int manifest_parse(const char *json, size_t len, const struct img_limits *lim,
                          struct img_manifest *m, struct sk_error *err)
{
	size_t pos = 0;
	long version = -1;
	int have_entries = 0;
	if (!json_take(json, len, &pos, "{"))
		goto shape;
	for (int k = 0; k < 2; k++) {
		if (k > 0 && !json_take(json, len, &pos, ","))
			goto shape;
		if (json_take(json, len, &pos, "\"version\"")) {
			if (version >= 0 || !json_take(json, len, &pos, ":") ||
			    !version_decode(json, len, &pos, &version))
				goto shape;
		} else if (json_take(json, len, &pos, "\"entries\"")) {
			if (have_entries || !json_take(json, len, &pos, ":") ||
			    !json_take(json, len, &pos, "["))
				goto shape;
			have_entries = 1;
			int r = entries_decode(json, len, &pos, lim, m, err);
			if (r < 0)
				return r;
		} else {
			goto shape;
		}
	}
	if (!json_take(json, len, &pos, "}") || json_skip_ws(json, len, pos) != len)
		goto shape;
	if (version != MANIFEST_VERSION)
		return sk_error_set(err, -SK_EINVAL_SPEC, "manifest: version %ld is not supported",
		                    version);
	return 0;
shape:
	return sk_error_set(err, -SK_EINVAL_SPEC,
	                    "manifest: bad JSON or not an object of \"version\" and \"entries\" "
	                    "(byte %zu)",
	                    pos);
}

int img_manifest_decode(const char *json, size_t len, int layer, const struct img_limits *lim,
                        struct img_manifest *m, struct sk_error *err)
{
	if (!lim)
		lim = &img_default_limits;
	if (len > IMG_MANIFEST_MAX_BYTES)
		return sk_error_set(err, -SK_EINVAL_SPEC, "manifest: %zu bytes, more than %llu",
		                    len, IMG_MANIFEST_MAX_BYTES);
	if (!json_depth_within(json, len, 4))
		return sk_error_set(err, -SK_EINVAL_SPEC, "manifest: JSON nested too deeply");
	struct img_manifest tmp;
	img_manifest_init(&tmp);
	int r = manifest_parse(json, len, lim, &tmp, err);
	if (r == 0)
		r = img_manifest_check(&tmp, layer, lim, err);
	if (r == 0) {
		img_manifest_free(m);
		*m = tmp;
		img_manifest_init(&tmp);
	}
	img_manifest_free(&tmp);
	return r;
}

int img_manifest_save(struct img_store *s, const struct img_manifest *m,
                      char digest[IMG_DIGEST_HEX], struct sk_error *err)
{
	char *json = NULL;
	size_t len = 0;
	int r = img_manifest_encode(m, &json, &len, err);
	if (r < 0)
		return r;
	r = img_blob_put(s, json, len, digest, err);
	free(json);
	return r < 0 ? sk_error_prefix(err, "save manifest") : 0;
}

int img_manifest_load(struct img_store *s, const char *digest, const struct img_limits *lim,
                      struct img_manifest *m, struct sk_error *err)
{
	_cleanup_free_ char *json = NULL;
	size_t len = 0;
	int r = img_blob_read(s, digest, IMG_MANIFEST_MAX_BYTES, &json, &len, err);
	if (r < 0)
		return sk_error_prefix(err, "load manifest");
	/* Layers and images are both stored: load takes either, and whoever needs an image
	 * checks it as one (img_manifest_check with layer 0). */
	r = img_manifest_decode(json, len, 1, lim, m, err);
	return r < 0 ? sk_error_prefix(err, "load manifest %s", digest) : 0;
}

/* ---- layers ---- */

/* The first index from i on that no subtree marking has reached (skip[k] == k: not reached). */
static size_t skip_find(size_t *skip, size_t i)
{
	while (skip[i] != i) {
		skip[i] = skip[skip[i]]; /* path halving */
		i = skip[i];
	}
	return i;
}

/* Mark dead every entry of base strictly below dir: those from "dir/" up to "dir0" ('0' follows
 * '/'), contiguous in byte order ("/a-b" sorts between "/a" and "/a/b", outside both). skip
 * (base->n + 1 entries) leaps over entries marked by an earlier subtree, so nested opaque
 * directories and whiteouts cost one pass over what they hide, not one per level. */
static void mark_subtree(const struct img_manifest *base, const char *dir, char *dead, size_t *skip)
{
	char key[IMG_PATH_MAX + 2];
	size_t lo, hi;
	if (strcmp(dir, "/") == 0) {
		lo = manifest_lower_bound(base, "/");
		lo += lo < base->n && strcmp(base->e[lo].path, "/") == 0;
		hi = base->n;
	} else {
		snprintf(key, sizeof(key), "%s/", dir);
		lo = manifest_lower_bound(base, key);
		key[strlen(key) - 1] = '0';
		hi = manifest_lower_bound(base, key);
	}
	for (size_t i = skip_find(skip, lo); i < hi; i = skip_find(skip, i)) {
		dead[i] = 1;
		skip[i] = i + 1;
	}
}

/* Add the missing ancestors of every entry of a sorted manifest as 0755 root directories. */
static int add_missing_ancestors(struct img_manifest *m, struct map *added, struct sk_error *err)
{
	size_t n0 = m->n;
	char parent[IMG_PATH_MAX + 1];
	if (!img_manifest_find(m, "/")) {
		struct img_entry root = {.path = "/", .type = IMG_DIR, .mode = 0755};
		if (img_manifest_add(m, &root, err) < 0)
			return -ENOMEM;
	}
	for (size_t i = 0; i < n0; i++) {
		if (strcmp(m->e[i].path, "/") == 0)
			continue;
		path_parent(m->e[i].path, parent);
		for (;;) {
			struct img_manifest sorted = {.e = m->e, .n = n0};
			const struct img_entry *p = img_manifest_find(&sorted, parent);
			if (p && p->type != IMG_DIR)
				return sk_error_set(err, -SK_EINVAL_SPEC,
				                    "apply layer: \"%.200s\" is under \"%.200s\", "
				                    "which is not a directory",
				                    m->e[i].path, parent);
			if (p || strcmp(parent, "/") == 0)
				break;
			/* Added already, with its own ancestors. */
			if (map_get(added, parent))
				break;
			struct img_entry d = {.path = parent, .type = IMG_DIR, .mode = 0755};
			if (img_manifest_add(m, &d, err) < 0 ||
			    map_put(added, m->e[m->n - 1].path, m) < 0)
				return sk_error_set(err, -ENOMEM, "apply layer: out of memory");
			char up[IMG_PATH_MAX + 1];
			path_parent(parent, up);
			memcpy(parent, up, strlen(up) + 1);
		}
	}
	return img_manifest_sort(m, err);
}

/* The same for a whole manifest, with the paths it added kept in a map (the keys are the
 * entries' own path strings, which stay where they are when the array grows). */
static int manifest_complete(struct img_manifest *m, struct sk_error *err)
{
	struct map added;
	map_init(&added);
	int r = add_missing_ancestors(m, &added, err);
	map_release(&added);
	return r;
}

/* Checked before base is touched, so that a layer that cannot apply changes nothing: the
 * nearest ancestor of l that survives (in the layer, else in base) must be a directory. */
static const char *apply_parent_problem(const struct img_manifest *base,
                                        const struct img_manifest *layer, const char *dead,
                                        const struct img_entry *l)
{
	char parent[IMG_PATH_MAX + 1];
	if (l->type == IMG_WHITEOUT || strcmp(l->path, "/") == 0)
		return NULL;
	path_parent(l->path, parent);
	for (;;) {
		const struct img_entry *p = img_manifest_find(layer, parent);
		if (!p) {
			size_t j = manifest_lower_bound(base, parent);
			if (j < base->n && !dead[j] && strcmp(base->e[j].path, parent) == 0)
				p = &base->e[j];
		}
		if (p)
			return p->type == IMG_DIR ? NULL : "its parent is not a directory";
		if (strcmp(parent, "/") == 0)
			return NULL;
		char up[IMG_PATH_MAX + 1];
		path_parent(parent, up);
		memcpy(parent, up, strlen(up) + 1);
	}
}

int img_manifest_apply(struct img_manifest *base, const struct img_manifest *layer,
                       struct sk_error *err)
{
	_cleanup_free_ char *dead = calloc(base->n + 1, 1);
	if (!dead)
		return sk_error_set(err, -ENOMEM, "apply layer: out of memory");
	_cleanup_free_ size_t *skip = malloc((base->n + 1) * sizeof(*skip));
	if (!skip)
		return sk_error_set(err, -ENOMEM, "apply layer: out of memory");
	for (size_t i = 0; i <= base->n; i++)
		skip[i] = i;
	for (size_t i = 0; i < layer->n; i++) {
		const struct img_entry *l = &layer->e[i];
		size_t j = manifest_lower_bound(base, l->path);
		if (j < base->n && strcmp(base->e[j].path, l->path) == 0)
			dead[j] = 1;
		/* A whiteout, an opaque directory and a non-directory hide what was below. */
		if (l->type != IMG_DIR || l->opaque)
			mark_subtree(base, l->path, dead, skip);
	}
	for (size_t i = 0; i < layer->n; i++) {
		const char *why = apply_parent_problem(base, layer, dead, &layer->e[i]);
		if (why)
			return sk_error_set(err, -SK_EINVAL_SPEC, "apply layer: \"%.200s\": %s",
			                    layer->e[i].path, why);
	}
	struct img_manifest out;
	img_manifest_init(&out);
	for (size_t i = 0; i < layer->n; i++) {
		if (layer->e[i].type == IMG_WHITEOUT)
			continue;
		if (img_manifest_add(&out, &layer->e[i], err) < 0) {
			img_manifest_free(&out);
			return err->code;
		}
		out.e[out.n - 1].opaque = 0;
	}
	/* The base's surviving entries move over as they are. */
	for (size_t i = 0; i < base->n; i++) {
		if (dead[i]) {
			entry_release(&base->e[i]);
			continue;
		}
		struct img_entry *e = manifest_grow(&out);
		if (!e) {
			sk_error_set(err, -ENOMEM, "apply layer: out of memory");
			for (size_t k = i; k < base->n; k++)
				if (!dead[k])
					entry_release(&base->e[k]);
			goto fail;
		}
		*e = base->e[i];
		out.n++;
	}
	free(base->e);
	img_manifest_init(base);
	int r = img_manifest_sort(&out, err);
	if (r == 0)
		r = manifest_complete(&out, err);
	if (r < 0) {
		img_manifest_free(&out);
		return r;
	}
	*base = out;
	return 0;
fail:
	img_manifest_free(&out);
	free(base->e);
	img_manifest_init(base);
	return err->code;
}

/* Extended attributes that carry ids (linux/posix_acl_xattr.h, linux/capability.h). */
#define ACL_XATTR_VERSION 2u
#define ACL_TAG_USER      0x02u
#define ACL_TAG_GROUP     0x08u
#define CAP_REVISION_MASK 0xFF000000u
#define CAP_REVISION_2    0x02000000u
#define CAP_REVISION_3    0x03000000u
#define CAP_V2_BYTES      20u /* magic_etc, then two {permitted, inheritable} pairs */
#define CAP_V3_BYTES      24u /* v2, then rootid */

static uint32_t le32_get(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void le32_put(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

static uint32_t id_unmap(uint32_t id, uint32_t base, uint32_t range, uint32_t nobody)
{
	return id >= base && id - base < range ? id - base : nobody;
}

/* 0, or 1 when the attribute is to go (a capability of a root outside the range). */
static int xattr_ids_unmap(struct img_xattr *x, uint32_t base, uint32_t range, uint32_t nobody)
{
	unsigned char *v = x->value;
	if (!strcmp(x->name, "system.posix_acl_access") ||
	    !strcmp(x->name, "system.posix_acl_default")) {
		if (x->len < 4 || (x->len - 4) % 8 || le32_get(v) != ACL_XATTR_VERSION)
			return 0; /* not one the kernel would take either */
		for (size_t off = 4; off < x->len; off += 8) {
			unsigned tag = (unsigned)v[off] | (unsigned)v[off + 1] << 8;
			if (tag == ACL_TAG_USER || tag == ACL_TAG_GROUP)
				le32_put(v + off + 4,
				         id_unmap(le32_get(v + off + 4), base, range, nobody));
		}
		return 0;
	}
	if (strcmp(x->name, "security.capability") || x->len != CAP_V3_BYTES ||
	    (le32_get(v) & CAP_REVISION_MASK) != CAP_REVISION_3)
		return 0;
	uint32_t root = le32_get(v + CAP_V2_BYTES);
	if (root < base || root - base >= range)
		return 1;
	if (root != base) {
		le32_put(v + CAP_V2_BYTES, root - base);
		return 0;
	}
	le32_put(v, (le32_get(v) & ~CAP_REVISION_MASK) | CAP_REVISION_2);
	x->len = CAP_V2_BYTES;
	return 0;
}

void img_manifest_ids_unmap(struct img_manifest *m, uint32_t base, uint32_t range, uint32_t nobody)
{
	for (size_t i = 0; i < m->n; i++) {
		struct img_entry *e = &m->e[i];
		e->uid = id_unmap(e->uid, base, range, nobody);
		e->gid = id_unmap(e->gid, base, range, nobody);
		for (size_t k = 0; k < e->nxattrs;) {
			struct img_xattr *x = &e->xattrs[k];
			if (!xattr_ids_unmap(x, base, range, nobody)) {
				k++;
				continue;
			}
			free(x->name);
			free(x->value);
			memmove(x, x + 1, (e->nxattrs - k - 1) * sizeof(*x));
			e->nxattrs--;
		}
	}
}
