/* skiff image: build, ls, show, logs, rm. A build is a POST /v1/images body made from options
 * (steps in the order given) or from a spec file; local files it copies are packed and
 * uploaded as blobs first (cli_blob.c), after every one of them has been checked, so a typo
 * uploads nothing. Then the build's output is followed to its end. */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../lib/hash.h"

#define BUILD_USAGE                                                                                \
	"[--from BASE] [--apt PKG[,PKG]]... [--run CMD]... [--copy LOCAL:DEST]... "                \
	"[--env K=V]... [--workdir DIR] [--entrypoint CMD|JSON] [--name NAME] [--detach] "         \
	"| -f SPEC.json [--name NAME] [--detach]"
#define LS_USAGE   "[--json]"
#define SHOW_USAGE "ID|NAME"
#define LOGS_USAGE "ID [-f|--follow]"
#define RM_USAGE   "ID..."
#define IMAGE_ARG  "the image's id or name"

#define BUILD_HELP                                                                                 \
	"BASE: busybox (the default), debian:bookworm, debian-slim (with python3), an image's\n"   \
	"id (im-...) or name, dir:PATH (a directory on the server; admin only), or\n"              \
	"oci-archive:FILE (a local OCI or docker-save archive, uploaded).\n"                       \
	"Steps run in the order given: --apt installs Debian packages, --run runs a shell\n"       \
	"command, --copy puts a local directory's contents (or a file) at DEST, --env,\n"          \
	"--workdir and --entrypoint ('prog arg' or a JSON array) set how sandboxes start.\n"       \
	"Copied trees are packed as tar (sorted, owner 0:0, modes and mtimes kept) and\n"          \
	"uploaded only when the server lacks them. A spec file is the API's body; its copy\n"      \
	"steps may say \"local\": \"./dir\" (relative to the file) instead of \"blob\".\n"         \
	"The build's output goes to stderr; the image's id to stdout. Exit 0 when the image\n"     \
	"is ready, 1 when the build failed (the failed step is named), 2 for bad input.\n"         \
	"--detach prints the id at once; 'skiff image logs -f ID' follows it."

#define SPEC_MAX_BYTES      (256u << 10) /* the server's limit on a JSON body */
#define BUILD_POLL_MS       500
#define BUILD_CREATE_TIME_S 120L
#define BUILD_MAX_STEPS     256 /* the server's limit */
#define BUILD_FOLLOW_TRIES  5
#define BUILD_WAIT_RETRY_S  60L

enum {
	OPT_FROM = 256,
	OPT_APT,
	OPT_RUN,
	OPT_COPY,
	OPT_ENV,
	OPT_WORKDIR,
	OPT_ENTRYPOINT,
	OPT_NAME,
	OPT_DETACH,
	OPT_JSON,
};

struct build_args {
	json_t *body;  /* {"base", "steps", "name"} */
	json_t *steps; /* borrowed from body */
	const char *spec_file;
	char *spec_dir; /* where a spec's relative "local" paths start */
	const char *name;
	bool detach;
	bool step_opts; /* an option that makes the body (not allowed with -f) */
	struct sk_error err;
};

static void build_args_release(struct build_args *a)
{
	json_decref(a->body);
	free(a->spec_dir);
}

static int set_str(json_t *obj, const char *key, const char *value, const char *what,
                   struct sk_error *err)
{
	if (json_object_set_new(obj, key, json_string(value)) < 0)
		return sk_error_set(err, -SK_EINVAL_SPEC, "%s: not valid UTF-8", what);
	return 0;
}

static int steps_append(struct build_args *a, const char *key, json_t *value)
{
	json_t *step = json_object();
	if (!value || !step || json_object_set_new(step, key, value) < 0 ||
	    json_array_append_new(a->steps, step) < 0)
		return sk_error_set(&a->err, -SK_EINVAL_SPEC, "--%s: not valid UTF-8", key);
	return 0;
}

/* --apt a,b,c: one step installing them. */
static int parse_apt(struct build_args *a, const char *s)
{
	json_t *pkgs = json_array();
	const char *p = s;
	for (;;) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		if (n == 0) {
			json_decref(pkgs);
			return sk_error_set(&a->err, -SK_EINVAL_SPEC,
			                    "--apt '%s': an empty package name", s);
		}
		json_array_append_new(pkgs, json_stringn(p, n));
		if (!comma)
			break;
		p = comma + 1;
	}
	return steps_append(a, "apt", pkgs);
}

/* --copy LOCAL:DEST, split at the first ':'; LOCAL is checked later, with the others. */
static int parse_copy(struct build_args *a, const char *s)
{
	const char *colon = strchr(s, ':');
	if (!colon || colon == s || colon[1] != '/')
		return sk_error_set(&a->err, -SK_EINVAL_SPEC,
		                    "--copy '%s': expected LOCAL:DEST, DEST an absolute path in "
		                    "the image (like ./app:/app)",
		                    s);
	json_t *copy = json_object();
	if (!copy || json_object_set_new(copy, "local", json_stringn(s, (size_t)(colon - s))) < 0 ||
	    json_object_set_new(copy, "dest", json_string(colon + 1)) < 0) {
		json_decref(copy);
		return sk_error_set(&a->err, -SK_EINVAL_SPEC, "--copy '%s': not valid UTF-8", s);
	}
	return steps_append(a, "copy", copy);
}

/* --env K=V: merged into the step before when that one sets env too. */
static int parse_env(struct build_args *a, const char *s)
{
	size_t n = json_array_size(a->steps);
	json_t *env = n ? json_object_get(json_array_get(a->steps, n - 1), "env") : NULL;
	if (env)
		return cli_parse_pair(s, '=', "--env", env, &a->err);
	env = json_object();
	int r = cli_parse_pair(s, '=', "--env", env, &a->err);
	if (r < 0) {
		json_decref(env);
		return r;
	}
	return steps_append(a, "env", env);
}

/* --entrypoint: a JSON array of strings, or words split at spaces. */
static int parse_entrypoint(struct build_args *a, const char *s)
{
	json_t *argv = NULL;
	if (s[0] == '[') {
		json_error_t jerr;
		argv = json_loads(s, JSON_REJECT_DUPLICATES, &jerr);
		size_t i;
		json_t *v;
		bool ok = json_is_array(argv) && json_array_size(argv) > 0;
		json_array_foreach (argv, i, v)
			ok = ok && json_is_string(v);
		if (!ok) {
			json_decref(argv);
			return sk_error_set(&a->err, -SK_EINVAL_SPEC,
			                    "--entrypoint '%s': expected a JSON array of strings",
			                    s);
		}
	} else {
		argv = json_array();
		for (const char *p = s; *p;) {
			p += strspn(p, " \t");
			size_t n = strcspn(p, " \t");
			if (n)
				json_array_append_new(argv, json_stringn(p, n));
			p += n;
		}
		if (json_array_size(argv) == 0) {
			json_decref(argv);
			return sk_error_set(&a->err, -SK_EINVAL_SPEC, "--entrypoint: empty");
		}
	}
	return steps_append(a, "entrypoint", argv);
}

static int build_parse(int argc, char **argv, struct build_args *a)
{
	static const struct option options[] = {
	    {"from", required_argument, NULL, OPT_FROM},
	    {"apt", required_argument, NULL, OPT_APT},
	    {"run", required_argument, NULL, OPT_RUN},
	    {"copy", required_argument, NULL, OPT_COPY},
	    {"env", required_argument, NULL, OPT_ENV},
	    {"workdir", required_argument, NULL, OPT_WORKDIR},
	    {"entrypoint", required_argument, NULL, OPT_ENTRYPOINT},
	    {"name", required_argument, NULL, OPT_NAME},
	    {"detach", no_argument, NULL, OPT_DETACH},
	    {"file", required_argument, NULL, 'f'},
	    {NULL, 0, NULL, 0},
	};
	a->body = json_object();
	a->steps = json_array();
	if (!a->body || !a->steps || json_object_set_new(a->body, "steps", a->steps) < 0)
		return cli_fail(&(struct sk_error){.msg = "out of memory"});
	int opt;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":f:", options, NULL)) != -1) {
		int r = 0;
		bool step = true;
		switch (opt) {
		case OPT_FROM: r = set_str(a->body, "base", optarg, "--from", &a->err); break;
		case OPT_APT: r = parse_apt(a, optarg); break;
		case OPT_RUN:
			r = optarg[0] ? steps_append(a, "run", json_string(optarg))
			              : sk_error_set(&a->err, -SK_EINVAL_SPEC, "--run: empty");
			break;
		case OPT_COPY: r = parse_copy(a, optarg); break;
		case OPT_ENV: r = parse_env(a, optarg); break;
		case OPT_WORKDIR:
			r = optarg[0] == '/'
			        ? steps_append(a, "workdir", json_string(optarg))
			        : sk_error_set(&a->err, -SK_EINVAL_SPEC,
			                       "--workdir '%s': expected an absolute path", optarg);
			break;
		case OPT_ENTRYPOINT: r = parse_entrypoint(a, optarg); break;
		case OPT_NAME: a->name = optarg, step = false; break;
		case OPT_DETACH: a->detach = true, step = false; break;
		case 'f': a->spec_file = optarg, step = false; break;
		default: return cli_option_error("image build", BUILD_USAGE, opt, argv);
		}
		if (r < 0)
			return cli_usage_error("image build", BUILD_USAGE, "%s", a->err.msg);
		a->step_opts |= step;
	}
	if (optind < argc)
		return cli_usage_error("image build", BUILD_USAGE, "unexpected argument '%s'",
		                       argv[optind]);
	if (a->spec_file && a->step_opts)
		return cli_usage_error("image build", BUILD_USAGE,
		                       "-f takes the whole build from the file: give either it or "
		                       "--from and step options");
	if (a->name && (!a->name[0] || set_str(a->body, "name", a->name, "--name", &a->err) < 0))
		return cli_usage_error("image build", BUILD_USAGE, "--name: expected a name");
	return 0;
}

/* Replace the body with the spec file's (keeping a --name given), within the server's size. */
static int spec_load(struct build_args *a, struct sk_error *err)
{
	_cleanup_fclose_ FILE *f = fopen(a->spec_file, "re");
	if (!f)
		return sk_error_set(err, errno == ENOENT ? -SK_EINVAL_SPEC : -errno, "%s: %s",
		                    a->spec_file, strerror(errno));
	struct stat st;
	if (fstat(fileno(f), &st) < 0)
		return sk_error_errno(err, -errno, "%s", a->spec_file);
	if (!S_ISREG(st.st_mode))
		return sk_error_set(err, -SK_EINVAL_SPEC, "%s: not a regular file", a->spec_file);
	_cleanup_free_ char *data = malloc(SPEC_MAX_BYTES + 1);
	if (!data)
		return sk_error_errno(err, -ENOMEM, "%s", a->spec_file);
	size_t n = fread(data, 1, SPEC_MAX_BYTES + 1, f);
	if (ferror(f))
		return sk_error_errno(err, -EIO, "read %s", a->spec_file);
	if (n > SPEC_MAX_BYTES)
		return sk_error_set(err, -SK_EINVAL_SPEC, "%s: larger than %u KiB", a->spec_file,
		                    SPEC_MAX_BYTES >> 10);
	json_error_t jerr;
	json_t *spec = json_loadb(data, n, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(spec)) {
		json_decref(spec);
		return sk_error_set(err, -SK_EINVAL_SPEC, "%s: line %d: %s", a->spec_file,
		                    jerr.line, spec ? "expected a JSON object" : jerr.text);
	}
	json_t *steps = json_object_get(spec, "steps");
	if (steps && !json_is_array(steps)) {
		json_decref(spec);
		return sk_error_set(err, -SK_EINVAL_SPEC, "%s: \"steps\" is not an array",
		                    a->spec_file);
	}
	if (a->name)
		json_object_set_new(spec, "name", json_string(a->name));
	json_decref(a->body);
	a->body = spec;
	a->steps = steps;
	_cleanup_free_ char *copy = strdup(a->spec_file);
	a->spec_dir = copy ? strdup(dirname(copy)) : NULL;
	return a->spec_dir ? 0 : sk_error_errno(err, -ENOMEM, "%s", a->spec_file);
}

/* The local path of a copy step, relative to the spec file's directory when there is one;
 * malloc'd. */
static char *local_path(const struct build_args *a, const char *local)
{
	char *p = NULL;
	if (local[0] == '/' || !a->spec_dir)
		return strdup(local);
	return asprintf(&p, "%s/%s", a->spec_dir, local) < 0 ? NULL : p;
}

/* Steps are numbered from 0 in messages, as the server numbers them in its build log. */

/* Check every copy step with "local" (and an oci-archive: base naming a file) before anything
 * is uploaded. */
static int locals_check(const struct build_args *a, struct sk_error *err)
{
	const char *base = cli_json_str(a->body, "base");
	if (base && !strncmp(base, "oci-archive:", 12) && strncmp(base + 12, "sha256:", 7)) {
		_cleanup_free_ char *path = base[12] ? local_path(a, base + 12) : NULL;
		struct stat st;
		if (!base[12])
			return sk_error_set(err, -SK_EINVAL_SPEC, "oci-archive: names no file");
		if (!path)
			return sk_error_errno(err, -ENOMEM, "base");
		if (stat(path, &st) < 0)
			return sk_error_set(err, errno == ENOENT ? -SK_EINVAL_SPEC : -errno,
			                    "base: %s: %s", path, strerror(errno));
		if (!S_ISREG(st.st_mode))
			return sk_error_set(err, -SK_EINVAL_SPEC, "base: %s: not a regular file",
			                    path);
	}
	/* Each local is held packed in a temporary file until all are: keep their number to the
	 * server's, well within the descriptors a process has. */
	if (json_array_size(a->steps) > BUILD_MAX_STEPS)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "more than %d steps, the most a build has", BUILD_MAX_STEPS);
	size_t i;
	json_t *step;
	json_array_foreach (a->steps, i, step) {
		json_t *copy = json_object_get(step, "copy");
		json_t *local = json_object_get(copy, "local");
		if (!local)
			continue;
		const char *dest = cli_json_str(copy, "dest");
		if (!json_is_string(local) || !json_string_value(local)[0])
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "step %zu: \"local\" must name a file or directory",
			                    i + 1);
		if (!dest || dest[0] != '/')
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "step %zu: copy needs \"dest\", an absolute path",
			                    i + 1);
		if (json_object_get(copy, "blob"))
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "step %zu: copy has both \"local\" and \"blob\"",
			                    i + 1);
		_cleanup_free_ char *path = local_path(a, json_string_value(local));
		if (!path)
			return sk_error_errno(err, -ENOMEM, "copy");
		int r = cli_tar_check(path, err);
		if (r < 0)
			return sk_error_prefix(err, "step %zu (copy)", i + 1);
		/* A file is put at DEST: a DEST ending in "." or ".." names no file. */
		const char *last = strrchr(dest, '/') + 1;
		struct stat st;
		if ((!strcmp(last, ".") || !strcmp(last, "..")) && stat(path, &st) == 0 &&
		    !S_ISDIR(st.st_mode))
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "step %zu (copy): %s: a file's DEST must end with the "
			                    "name to give it, or '/'",
			                    i + 1, dest);
	}
	return 0;
}

/* A copy of a file: the tar holds it under the name DEST ends with (or its own name when DEST
 * ends with '/'), and is unpacked at DEST's directory. */
static int copy_file_target(const char *local, const char *dest, char **ret_dir, char **ret_name)
{
	size_t n = strlen(dest);
	_cleanup_free_ char *l = strdup(local);
	if (!l)
		return -ENOMEM;
	if (dest[n - 1] == '/') {
		*ret_name = strdup(basename(l));
		*ret_dir = n > 1 ? strndup(dest, n - 1) : strdup("/");
	} else {
		const char *slash = strrchr(dest, '/');
		*ret_name = strdup(slash + 1);
		*ret_dir = slash == dest ? strdup("/") : strndup(dest, (size_t)(slash - dest));
	}
	return *ret_name && *ret_dir ? 0 : -ENOMEM;
}

/* What a build uploads: each copy step's "local" packed, and an oci-archive: base's file. */
struct local_blob {
	struct cli_blob b;
	size_t step; /* its index in steps; SIZE_MAX: the base */
	char *path;  /* as found (a spec's relative path joined to its directory) */
	char *dir;   /* a copy's dest: where the tar is unpacked */
};

struct local_blobs {
	struct local_blob *v;
	size_t n;
};

static void local_blobs_release(struct local_blobs *l)
{
	for (size_t i = 0; i < l->n; i++) {
		cli_blob_release(&l->v[i].b);
		free(l->v[i].path);
		free(l->v[i].dir);
	}
	free(l->v);
}

static struct local_blob *local_blobs_add(struct local_blobs *l, size_t step, char *path)
{
	struct local_blob *v = reallocarray(l->v, l->n + 1, sizeof(*v));
	if (!v) {
		free(path);
		return NULL;
	}
	l->v = v;
	v[l->n] = (struct local_blob){.b = {.fd = -1}, .step = step, .path = path};
	return &v[l->n++];
}

/* Pack every "local" of a copy step (and copy an oci-archive: base naming a file) into a
 * temporary file before anything is uploaded: a fifo or an unreadable file deep in the last
 * tree is bad input that must leave the server untouched, as a missing path does. */
static int locals_pack(const struct build_args *a, struct local_blobs *l, struct sk_error *err)
{
	const char *base = cli_json_str(a->body, "base");
	if (base && !strncmp(base, "oci-archive:", 12) && strncmp(base + 12, "sha256:", 7)) {
		struct local_blob *lb = local_blobs_add(l, SIZE_MAX, local_path(a, base + 12));
		if (!lb || !lb->path)
			return sk_error_errno(err, -ENOMEM, "base");
		int r = cli_blob_copy_file(lb->path, &lb->b, err);
		if (r < 0)
			return r;
	}
	size_t i;
	json_t *step;
	json_array_foreach (a->steps, i, step) {
		json_t *copy = json_object_get(step, "copy");
		const char *local = cli_json_str(copy, "local");
		if (!local)
			continue;
		struct local_blob *lb = local_blobs_add(l, i, local_path(a, local));
		_cleanup_free_ char *name = NULL;
		struct stat st;
		if (!lb || !lb->path)
			return sk_error_errno(err, -ENOMEM, "copy");
		if (stat(lb->path, &st) < 0)
			return sk_error_errno(err, -errno, "step %zu (copy): %s", i + 1, lb->path);
		const char *dest = cli_json_str(copy, "dest");
		if (!S_ISDIR(st.st_mode) && copy_file_target(lb->path, dest, &lb->dir, &name) < 0)
			return sk_error_errno(err, -ENOMEM, "copy");
		if (!lb->dir) { /* a directory: at dest, without a trailing '/' */
			size_t n = strlen(dest);
			while (n > 1 && dest[n - 1] == '/')
				n--;
			lb->dir = strndup(dest, n);
			if (!lb->dir)
				return sk_error_errno(err, -ENOMEM, "copy");
		}
		int r = cli_blob_pack(lb->path, name, &lb->b, err);
		if (r < 0)
			return sk_error_prefix(err, "step %zu (copy)", i + 1);
	}
	return 0;
}

/* Upload what locals_pack made unless the server has it, saying on stderr what each one is
 * (a spec file's "local" may name any file its reader can read: the user sees which), and put
 * the blobs in the body in place of the local paths. */
static int locals_upload(struct cli *c, const struct build_args *a, const struct local_blobs *l,
                         struct sk_error *err)
{
	for (size_t k = 0; k < l->n; k++) {
		const struct local_blob *lb = &l->v[k];
		bool put = false;
		int r = cli_blob_upload(c, &lb->b, &put, err);
		if (r < 0)
			return lb->step == SIZE_MAX
			           ? sk_error_prefix(err, "base: upload %s", lb->path)
			           : sk_error_prefix(err, "step %zu (copy): upload %s",
			                             lb->step + 1, lb->path);
		if (lb->step == SIZE_MAX)
			fputs("skiff: base: ", stderr);
		else
			fprintf(stderr, "skiff: step %zu (copy): ", lb->step + 1);
		cli_print_safe(stderr, lb->path);
		fprintf(stderr, ": %" PRIu64 " KiB, sha256:%.12s, %s\n", (lb->b.size + 1023) >> 10,
		        lb->b.hex, put ? "uploaded" : "already on the server");

		_cleanup_free_ char *blob = NULL;
		if (asprintf(&blob, "%ssha256:%s", lb->step == SIZE_MAX ? "oci-archive:" : "",
		             lb->b.hex) < 0)
			return sk_error_errno(err, -ENOMEM, "upload");
		if (lb->step == SIZE_MAX) {
			json_object_set_new(a->body, "base", json_string(blob));
			continue;
		}
		json_t *copy = json_object_get(json_array_get(a->steps, lb->step), "copy");
		json_object_del(copy, "local");
		json_object_set_new(copy, "blob", json_string(blob));
		json_object_set_new(copy, "dest", json_string(lb->dir));
	}
	return 0;
}

/* "/v1/images/<ref escaped><rest>" */
static char *image_path(const char *ref, const char *rest)
{
	_cleanup_free_ char *esc = cli_escape(ref);
	char *p = NULL;
	if (!esc || asprintf(&p, "/v1/images/%s%s", esc, rest) < 0)
		return NULL;
	return p;
}

static int write_to(const char *p, size_t n, void *ud)
{
	FILE *f = ud;
	return fwrite(p, 1, n, f) == n && fflush(f) == 0 ? 0 : -1;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Print the build output of image id to f, as far as it goes now. */
static int image_logs_print(struct cli *c, const char *id, FILE *f, struct sk_error *err)
{
	_cleanup_free_ char *path = image_path(id, "/logs");
	if (!path)
		return sk_error_errno(err, -ENOMEM, "logs");
	struct cli_sink sink = {write_to, f};
	return cli_http_stream(c, path, &sink, err);
}

/* The log from its start again, printing only what is past what was printed. */
struct log_resume {
	FILE *f;
	uint64_t printed; /* bytes of the log printed so far */
	uint64_t got;     /* bytes of the log this request has brought */
};

static int write_resumed(const char *p, size_t n, void *ud)
{
	struct log_resume *l = ud;
	uint64_t start = l->got;
	l->got += n;
	if (l->got <= l->printed)
		return 0;
	size_t skip = l->printed > start ? (size_t)(l->printed - start) : 0;
	l->printed = l->got;
	return write_to(p + skip, n - skip, l->f);
}

/* Print a build's output to f until the build ends. The server sends the log from its start
 * on each request: a stream cut short while the build goes on is followed again, what was
 * printed skipped, and once the build has ended its rest is fetched at once. Gives up, -1 with
 * err, after a few tries that bring nothing new. */
static int logs_follow(struct cli *c, const char *id, FILE *f, struct sk_error *err)
{
	_cleanup_free_ char *follow = image_path(id, "/logs?follow=true");
	_cleanup_free_ char *whole = image_path(id, "/logs");
	_cleanup_free_ char *self = image_path(id, "");
	struct log_resume l = {.f = f};
	struct cli_sink sink = {write_resumed, &l};
	if (!follow || !whole || !self)
		return sk_error_errno(err, -ENOMEM, "logs");
	for (int fruitless = 0;;) {
		uint64_t before = l.printed;
		l.got = 0;
		int r = cli_http_stream(c, follow, &sink, err);
		if (r == 0)
			return 0;
		if (cli_signal_count())
			return -1;
		_cleanup_json_ json_t *im = NULL;
		struct sk_error gerr = {0};
		const char *state = NULL;
		if (cli_http(c, "GET", self, NULL, CLI_REQUEST_TIMEOUT_S, &im, &gerr) == 0)
			state = cli_json_str(im, "state");
		if (state && strcmp(state, "building") != 0) {
			l.got = 0;
			if (cli_http_stream(c, whole, &sink, err) == 0)
				return 0;
			if (cli_signal_count())
				return -1;
		}
		fruitless = l.printed > before ? 0 : fruitless + 1;
		if (fruitless == BUILD_FOLLOW_TRIES) {
			if (!err->code)
				sk_error_set(err, -EIO, "no answer");
			return sk_error_prefix(err, "the build's output stopped");
		}
		sleep_ms(BUILD_POLL_MS << (fruitless < 4 ? fruitless : 4));
	}
}

/* Poll image id until its build has ended; *ret is the image. */
static int image_wait(struct cli *c, const char *id, json_t **ret, struct sk_error *err)
{
	_cleanup_free_ char *path = image_path(id, "");
	if (!path)
		return sk_error_errno(err, -ENOMEM, "image");
	time_t failing_since = 0;
	for (;;) {
		json_t *im = NULL;
		int r = cli_http(c, "GET", path, NULL, CLI_REQUEST_TIMEOUT_S, &im, err);
		/* The build goes on without us: a server busy (503) or out of reach for a while
		 * is waited out, not reported as the build's end. */
		bool transient = r == -EAGAIN || r == -ECONNREFUSED || r == -ETIMEDOUT || r == -EIO;
		if (r < 0 && transient && !cli_signal_count()) {
			time_t now = time(NULL);
			if (!failing_since) {
				failing_since = now;
				fprintf(stderr, "skiff: %s; trying again for up to %ld s\n",
				        err->msg, BUILD_WAIT_RETRY_S);
			}
			if (now - failing_since < BUILD_WAIT_RETRY_S) {
				sleep_ms(BUILD_POLL_MS * 2);
				continue;
			}
		}
		if (r < 0)
			return r;
		failing_since = 0;
		const char *state = cli_json_str(im, "state");
		if (!state || strcmp(state, "building") != 0) {
			*ret = im;
			return 0;
		}
		json_decref(im);
		if (cli_signal_count())
			return -EINTR;
		sleep_ms(BUILD_POLL_MS);
	}
}

/* Why a failed image failed: its "error" (a string or {message}), with the step it names. */
static void image_failure_print(const char *id, const json_t *im)
{
	const json_t *e = json_object_get(im, "error");
	const char *msg = json_is_string(e) ? json_string_value(e) : cli_json_str(e, "message");
	fputs("skiff: image ", stderr);
	cli_print_safe(stderr, id);
	fputs(" failed", stderr);
	const json_t *step = json_object_get(im, "failed_step");
	if (!step)
		step = json_object_get(e, "step");
	if (json_is_integer(step))
		fprintf(stderr, " at step %lld", (long long)json_integer_value(step));
	else if (json_is_string(step)) {
		fputs(" at step ", stderr);
		cli_print_safe(stderr, json_string_value(step));
	}
	if (msg) {
		fputs(": ", stderr);
		cli_print_safe(stderr, msg);
	}
	fputc('\n', stderr);
}

static int image_build(struct cli *c, int argc, char **argv)
{
	_cleanup_(build_args_release) struct build_args a = {0};
	int st = build_parse(argc, argv, &a);
	if (st)
		return st;
	struct sk_error err = {0};
	if (a.spec_file && spec_load(&a, &err) < 0)
		return sk_error_is_input(&err)
		           ? cli_usage_error("image build", BUILD_USAGE, "%s", err.msg)
		           : cli_fail(&err);
	/* busybox when nothing says otherwise (the API wants a base). */
	if (!json_object_get(a.body, "base"))
		json_object_set_new(a.body, "base", json_string("busybox"));
	if (locals_check(&a, &err) < 0)
		return sk_error_is_input(&err)
		           ? cli_usage_error("image build", BUILD_USAGE, "%s", err.msg)
		           : cli_fail(&err);

	cli_signals_install();
	c->abort_after_signals = 1;
	_cleanup_json_ json_t *im = NULL;
	_cleanup_(local_blobs_release) struct local_blobs blobs = {0};
	if (locals_pack(&a, &blobs, &err) < 0 || locals_upload(c, &a, &blobs, &err) < 0 ||
	    cli_http(c, "POST", "/v1/images", a.body, BUILD_CREATE_TIME_S, &im, &err) < 0) {
		if (cli_signal_count())
			return 128 + cli_signal_caught();
		/* Found while packing (a fifo in a copied tree): still the input's fault. */
		cli_fail(&err);
		return sk_error_is_input(&err) ? EXIT_USAGE : 1;
	}
	const char *id = cli_json_str(im, "id");
	if (!id)
		return cli_fail(&(struct sk_error){.msg = "build image: the reply has no id"});
	_cleanup_free_ char *idc = strdup(id);
	if (!idc)
		return cli_fail(&(struct sk_error){.msg = "out of memory"});
	if (a.detach) {
		printf("%s\n", idc);
		return 0;
	}

	/* The output goes to stderr: stdout is for the id alone. A stream cut short is not the
	 * build's end: its state says. */
	_cleanup_json_ json_t *done = NULL;
	struct sk_error ferr = {0};
	if (logs_follow(c, idc, stderr, &ferr) < 0 && !cli_signal_count())
		fprintf(stderr, "skiff: %s\n", ferr.msg); /* image_wait says how it ended */
	if (cli_signal_count() || image_wait(c, idc, &done, &err) < 0) {
		if (!cli_signal_count())
			return cli_fail(&err);
		fprintf(stderr,
		        "skiff: the build of %s goes on; 'skiff image logs -f %s' follows it\n",
		        idc, idc);
		return 128 + cli_signal_caught();
	}
	const char *state = cli_json_str(done, "state");
	if (state && !strcmp(state, "ready")) {
		printf("%s\n", idc);
		return 0;
	}
	image_failure_print(idc, done);
	return 1;
}

static int image_ls(struct cli *c, int argc, char **argv)
{
	static const struct cli_column cols[] = {
	    {.header = "ID", .key = "id"},       {.header = "NAME", .key = "name"},
	    {.header = "STATE", .key = "state"}, {.header = "SIZE", .key = "size", .bytes = true},
	    {.header = "FILES", .key = "files"}, {.header = "CREATED", .key = "created_at"},
	};
	return cli_list_command(c, "image ls", LS_USAGE, argc, argv, "/v1/images", cols,
	                        ARRAY_SIZE(cols));
}

static int image_show(struct cli *c, int argc, char **argv)
{
	static const struct option options[] = {{"json", no_argument, NULL, OPT_JSON},
	                                        {NULL, 0, NULL, 0}};
	int opt, st = 0;
	opterr = 0;
	/* Always JSON (an image has nested layers); --json is accepted for symmetry. */
	while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1)
		if (opt != OPT_JSON)
			return cli_option_error("image show", SHOW_USAGE, opt, argv);
	const char *ref = cli_one_arg("image show", SHOW_USAGE, IMAGE_ARG, argc, argv, &st);
	if (!ref)
		return st;
	struct sk_error err = {0};
	_cleanup_free_ char *path = image_path(ref, "");
	_cleanup_json_ json_t *im = NULL;
	if (!path)
		return cli_fail(&(struct sk_error){.msg = "out of memory"});
	if (cli_http(c, "GET", path, NULL, CLI_REQUEST_TIMEOUT_S, &im, &err) < 0)
		return cli_fail(&err);
	cli_print_json(im);
	return 0;
}

static int image_logs(struct cli *c, int argc, char **argv)
{
	static const struct option options[] = {{"follow", no_argument, NULL, 'f'},
	                                        {NULL, 0, NULL, 0}};
	bool follow = false;
	int opt, st = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":f", options, NULL)) != -1) {
		if (opt != 'f')
			return cli_option_error("image logs", LOGS_USAGE, opt, argv);
		follow = true;
	}
	const char *ref = cli_one_arg("image logs", LOGS_USAGE, IMAGE_ARG, argc, argv, &st);
	if (!ref)
		return st;
	cli_signals_install();
	c->abort_after_signals = 1;
	struct sk_error err = {0};
	int r = follow ? logs_follow(c, ref, stdout, &err) : image_logs_print(c, ref, stdout, &err);
	if (r < 0)
		return cli_signal_count() ? 128 + cli_signal_caught() : cli_fail(&err);
	return 0;
}

static int image_rm(struct cli *c, int argc, char **argv)
{
	return cli_rm_command(c, "image rm", RM_USAGE, "the image's id", argc, argv, "/v1/images");
}

static const struct cli_command commands[] = {
    {"build", image_build, BUILD_USAGE,
     "build an image from a base and steps; print its id when it is ready\n\n" BUILD_HELP},
    {"ls", image_ls, LS_USAGE, "list images"},
    {"show", image_show, SHOW_USAGE, "show one image (JSON): state, size, layers"},
    {"logs", image_logs, LOGS_USAGE, "print an image's build output (-f: until it ends)"},
    {"rm", image_rm, RM_USAGE, "remove images (refused while a sandbox uses one)"},
};

int cli_image_main(struct cli *c, int argc, char **argv)
{
	return cli_group_run(c, "image", commands, ARRAY_SIZE(commands), argc, argv);
}
