/* A build spec checked whole before anything is made: every field, every step, every blob it
 * names, so that a bad spec is a 400 naming the field and creates nothing. Env and
 * entrypoint follow the sandbox spec's rules (the runtime's parser checks them), since an
 * image's config becomes a sandbox's defaults. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../image/manifest.h"
#include "../runtime/spec.h"
#include "server.h"

int image_name_valid(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > STORE_IMAGE_NAME_BYTES - 1)
		return 0;
	/* An id's prefix would make "im-…" ambiguous where an id or a name is taken. */
	if (!strncmp(s, "im-", 3))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
		      strchr("._-", s[i])))
			return 0;
	return 1;
}

static int bad(struct sk_error *err, const char *fmt, ...) _printf_(2, 3);
static int bad(struct sk_error *err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char msg[sizeof(err->msg)];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return sk_error_set(err, -EINVAL, "%s", msg);
}

/* "sha256:<hex>" of a stored blob: the hex into hex. */
static int blob_ref(struct server *srv, const char *ws, int admin, const char *s, const char *field,
                    char hex[IMG_DIGEST_HEX], struct sk_error *err)
{
	if (!s || strncmp(s, "sha256:", 7) || !img_digest_valid(s + 7))
		return bad(err, "%s: expected \"sha256:<64 lowercase hex digits>\"", field);
	/* Another workspace's blob is as good as missing: a build would hand its bytes over. */
	if (!blob_readable_by(srv, ws, admin, s + 7) || !img_blob_exists(&srv->imgs, s + 7))
		return bad(err, "%s: blob %.80s is not stored: upload it first (PUT /v1/blobs/…)",
		           field, s);
	snprintf(hex, IMG_DIGEST_HEX, "%s", s + 7);
	blob_touch(srv, hex); /* the build is about to use it: gc must wait */
	return 0;
}

static int base_check(struct server *srv, const char *ws, json_t *v, int admin,
                      struct sk_error *err)
{
	const char *s = json_string_value(v);
	if (!s)
		return bad(err,
		           "base: expected a string (busybox, debian:bookworm, debian-slim, an "
		           "image's id or name, oci-archive:sha256:…, dir:/path)");
	if (!strcmp(s, "busybox") || !strcmp(s, "debian:bookworm") || !strcmp(s, "debian-slim"))
		return 0;
	if (!strncmp(s, "oci-archive:", 12)) {
		char hex[IMG_DIGEST_HEX];
		return blob_ref(srv, ws, admin, s + 12, "base", hex, err);
	}
	if (!strncmp(s, "dir:", 4)) {
		if (!admin)
			return sk_error_set(err, -EPERM, "base: dir: bases are for admins only");
		struct stat st;
		if (!img_path_valid(s + 4) || strlen(s + 4) < 2)
			return bad(err, "base: dir: needs an absolute, normalized path");
		if (stat(s + 4, &st) < 0 || !S_ISDIR(st.st_mode))
			return bad(err, "base: %.200s is not a directory", s + 4);
		return 0;
	}
	if (!image_find(srv, ws, s))
		return bad(err,
		           "base: %.140s is neither a known base (busybox, debian:bookworm, "
		           "debian-slim) nor a ready image of this workspace",
		           s);
	return 0;
}

static int env_check(json_t *v, const char *field, struct sk_error *err)
{
	if (!json_is_object(v))
		return bad(err, "%s: expected an object of strings", field);
	struct spec spec;
	spec_init(&spec);
	json_t *o = json_pack("{s:O}", "env", v);
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	int r = text ? spec_apply_json(&spec, text, strlen(text), err) : -ENOMEM;
	free(text);
	spec_release(&spec);
	if (r == -ENOMEM)
		return sk_error_set(err, -ENOMEM, "out of memory");
	if (r < 0)
		return bad(err, "%s: %s", field, err->msg);
	return 0;
}

static int strings_check(json_t *v, const char *field, size_t max, struct sk_error *err)
{
	if (!json_is_array(v) || json_array_size(v) > max)
		return bad(err, "%s: expected a list of at most %zu strings", field, max);
	size_t i;
	json_t *a;
	json_array_foreach (v, i, a) {
		if (!json_is_string(a) || json_string_length(a) != strlen(json_string_value(a)) ||
		    json_string_length(a) > SPEC_MAX_PATH_BYTES)
			return bad(err,
			           "%s[%zu]: expected a string without NUL of at most %d bytes",
			           field, i, SPEC_MAX_PATH_BYTES);
	}
	return 0;
}

static int package_valid(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > 128 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
		return 0;
	for (size_t i = 1; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
		      strchr("+.-", s[i])))
			return 0;
	return 1;
}

static int step_check(struct server *srv, const char *ws, int admin, json_t *step, size_t i,
                      struct sk_error *err)
{
	char field[48];
	if (!json_is_object(step) || json_object_size(step) != 1)
		return bad(
		    err,
		    "steps[%zu]: expected an object with one of apt, run, copy, env, workdir, "
		    "entrypoint",
		    i);
	const char *kind = json_object_iter_key(json_object_iter(step));
	json_t *v = json_object_iter_value(json_object_iter(step));
	snprintf(field, sizeof(field), "steps[%zu].%.16s", i, kind);
	if (!strcmp(kind, "apt")) {
		if (!json_is_array(v) || json_array_size(v) < 1 ||
		    json_array_size(v) > IMAGE_MAX_APT_PACKAGES)
			return bad(err, "%s: expected a list of 1 to %d package names", field,
			           IMAGE_MAX_APT_PACKAGES);
		size_t j;
		json_t *p;
		json_array_foreach (v, j, p)
			if (!json_is_string(p) || !package_valid(json_string_value(p)))
				return bad(err,
				           "%s[%zu]: not a package name ([a-z0-9][a-z0-9+.-]*)",
				           field, j);
		return 0;
	}
	if (!strcmp(kind, "run")) {
		if (!json_is_string(v) || !json_string_length(v) ||
		    json_string_length(v) > IMAGE_MAX_RUN_BYTES ||
		    json_string_length(v) != strlen(json_string_value(v)))
			return bad(err,
			           "%s: expected a shell command of 1 to %d bytes, without NUL",
			           field, IMAGE_MAX_RUN_BYTES);
		return 0;
	}
	if (!strcmp(kind, "copy")) {
		json_t *blob = json_object_get(v, "blob"), *dest = json_object_get(v, "dest");
		if (!json_is_object(v) || json_object_size(v) != 2 || !blob || !dest)
			return bad(err,
			           "%s: expected {\"blob\": \"sha256:…\", \"dest\": \"/path\"}",
			           field);
		char hex[IMG_DIGEST_HEX], f[64];
		snprintf(f, sizeof(f), "%s.blob", field);
		if (blob_ref(srv, ws, admin, json_string_value(blob), f, hex, err) < 0)
			return -EINVAL;
		if (!json_is_string(dest) || !img_path_valid(json_string_value(dest)))
			return bad(err, "%s.dest: expected an absolute, normalized path", field);
		return 0;
	}
	if (!strcmp(kind, "env"))
		return env_check(v, field, err);
	if (!strcmp(kind, "workdir")) {
		if (!json_is_string(v) || !img_path_valid(json_string_value(v)))
			return bad(err, "%s: expected an absolute, normalized path", field);
		return 0;
	}
	if (!strcmp(kind, "entrypoint"))
		return strings_check(v, field, IMAGE_MAX_ENTRYPOINT_ARGS, err);
	return bad(err,
	           "steps[%zu]: unknown step \"%.32s\" (apt, run, copy, env, workdir, "
	           "entrypoint)",
	           i, kind);
}

int image_spec_check(struct server *srv, const char *ws, json_t *spec, int admin,
                     struct sk_error *err)
{
	const char *key;
	json_t *v;
	json_object_foreach (spec, key, v)
		if (strcmp(key, "base") && strcmp(key, "steps") && strcmp(key, "name"))
			return bad(err, "unknown field \"%.64s\" (base, steps, name)", key);
	json_t *base = json_object_get(spec, "base");
	if (!base)
		return bad(err, "base: required");
	int r = base_check(srv, ws, base, admin, err);
	if (r < 0)
		return r;
	json_t *name = json_object_get(spec, "name");
	if (name && !json_is_null(name) &&
	    (!json_is_string(name) || !image_name_valid(json_string_value(name))))
		return bad(err, "name: expected 1 to 128 of [a-z0-9._-], not starting with im-");
	json_t *steps = json_object_get(spec, "steps");
	if (steps && !json_is_null(steps)) {
		if (!json_is_array(steps) || json_array_size(steps) > IMAGE_MAX_STEPS)
			return bad(err, "steps: expected a list of at most %d steps",
			           IMAGE_MAX_STEPS);
		size_t i;
		json_t *step;
		json_array_foreach (steps, i, step)
			if ((r = step_check(srv, ws, admin, step, i, err)) < 0)
				return r;
	}
	return 0;
}
