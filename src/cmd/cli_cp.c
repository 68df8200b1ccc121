/* skiff sandbox cp: copy a file into or out of a running sandbox through the file routes
 * (PUT/GET /v1/sandboxes/{id}/files). One side is ID:PATH, the other a local path or "-". */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

#define CP_USAGE     "SRC DST   (one of them ID:/PATH; a local path or - for stdin/stdout)"
#define CP_MAX_BYTES (8u << 20) /* the API's limit on one file */

/* "sb-…:/path" → id and path (pointers into a copy); 0 when s is not of that form. */
static int remote_split(const char *s, char *id, size_t id_size, const char **ret_path)
{
	const char *colon = strchr(s, ':');
	if (!colon || colon == s || (size_t)(colon - s) >= id_size || strncmp(s, "sb-", 3) ||
	    colon[1] != '/')
		return 0;
	memcpy(id, s, (size_t)(colon - s));
	id[colon - s] = '\0';
	*ret_path = colon + 1;
	return 1;
}

static int read_all(int fd, char **ret, size_t *ret_len, struct sk_error *err)
{
	size_t cap = 65536, len = 0;
	char *buf = malloc(cap);
	if (!buf)
		return sk_error_errno(err, -ENOMEM, "read");
	for (;;) {
		if (len == cap) {
			if (cap > CP_MAX_BYTES) {
				free(buf);
				return sk_error_set(err, -EFBIG,
				                    "larger than %u MiB, the limit of one file",
				                    CP_MAX_BYTES >> 20);
			}
			char *p = realloc(buf, cap * 2);
			if (!p) {
				free(buf);
				return sk_error_errno(err, -ENOMEM, "read");
			}
			buf = p, cap *= 2;
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = -errno;
			free(buf);
			return sk_error_errno(err, e, "read");
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > CP_MAX_BYTES) {
		free(buf);
		return sk_error_set(err, -EFBIG, "larger than %u MiB, the limit of one file",
		                    CP_MAX_BYTES >> 20);
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}

/* Write len bytes to path (created or truncated). */
static int write_file(const char *path, const char *data, size_t len)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	for (size_t off = 0; off < len;) {
		ssize_t n = write(fd, data + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		off += (size_t)n;
	}
	return close(TAKE_FD(fd)) < 0 ? -errno : 0;
}

static int upload(struct cli *c, const char *local, const char *id, const char *path)
{
	struct sk_error err = {0};
	_cleanup_close_ int fd = strcmp(local, "-") ? open(local, O_RDONLY | O_CLOEXEC) : dup(0);
	if (fd < 0) {
		sk_error_errno(&err, -errno, "open %s", local);
		return cli_fail(&err);
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || S_ISDIR(st.st_mode)) {
		sk_error_set(&err, -EISDIR, "%s: a file is needed (directories are not copied yet)",
		             local);
		return cli_fail(&err);
	}
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	if (read_all(fd, &data, &len, &err) < 0) {
		sk_error_prefix(&err, "%s", local);
		return cli_fail(&err);
	}
	/* A destination ending in / names a directory: the file keeps its name. */
	_cleanup_free_ char *dest = NULL, *base_copy = strdup(local);
	if (!base_copy || asprintf(&dest, "%s%s", path,
	                           path[strlen(path) - 1] == '/' ? basename(base_copy) : "") < 0) {
		sk_error_errno(&err, -ENOMEM, "cp");
		return cli_fail(&err);
	}
	if (!strcmp(local, "-") && path[strlen(path) - 1] == '/') {
		sk_error_set(&err, -EINVAL, "from stdin, name the file: ID:/dir/name");
		return cli_fail(&err);
	}
	_cleanup_free_ char *eid = cli_escape(id), *epath = cli_escape(dest), *url = NULL;
	char mode[8];
	snprintf(mode, sizeof(mode), "%o", S_ISREG(st.st_mode) ? st.st_mode & 0777 : 0644);
	if (!eid || !epath ||
	    asprintf(&url, "/v1/sandboxes/%s/files?path=%s&mode=%s&parents=true", eid, epath,
	             mode) < 0) {
		sk_error_errno(&err, -ENOMEM, "cp");
		return cli_fail(&err);
	}
	_cleanup_free_ char *reply = NULL;
	size_t rlen = 0;
	if (cli_http_raw(c, "PUT", url, data ? data : "", len, CLI_REQUEST_TIMEOUT_S, &reply, &rlen,
	                 NULL, &err) < 0)
		return cli_fail(&err);
	return 0;
}

static int download(struct cli *c, const char *id, const char *path, const char *local)
{
	struct sk_error err = {0};
	_cleanup_free_ char *eid = cli_escape(id), *epath = cli_escape(path), *url = NULL;
	if (!eid || !epath || asprintf(&url, "/v1/sandboxes/%s/files?path=%s", eid, epath) < 0) {
		sk_error_errno(&err, -ENOMEM, "cp");
		return cli_fail(&err);
	}
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	if (cli_http_raw(c, "GET", url, NULL, 0, CLI_REQUEST_TIMEOUT_S, &data, &len, NULL, &err) <
	    0)
		return cli_fail(&err);
	if (!strcmp(local, "-"))
		return fwrite(data ? data : "", 1, len, stdout) == len && fflush(stdout) == 0 ? 0
		                                                                              : 1;
	/* Into a local directory: the file keeps its name. */
	_cleanup_free_ char *target = NULL, *base_copy = strdup(path);
	struct stat st;
	if (!base_copy ||
	    asprintf(&target, "%s%s%s", local,
	             stat(local, &st) == 0 && S_ISDIR(st.st_mode) ? "/" : "",
	             stat(local, &st) == 0 && S_ISDIR(st.st_mode) ? basename(base_copy) : "") < 0) {
		sk_error_errno(&err, -ENOMEM, "cp");
		return cli_fail(&err);
	}
	int r = write_file(target, data ? data : "", len);
	if (r < 0) {
		sk_error_errno(&err, r, "write %s", target);
		return cli_fail(&err);
	}
	return 0;
}

int cli_sandbox_cp(struct cli *c, int argc, char **argv)
{
	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("usage: skiff sandbox cp %s\n", CP_USAGE);
		return 0;
	}
	if (argc != 3)
		return cli_usage_error("sandbox cp", CP_USAGE,
		                       "expected a source and a destination");
	char sid[64], did[64];
	const char *spath, *dpath;
	int src_remote = remote_split(argv[1], sid, sizeof(sid), &spath);
	int dst_remote = remote_split(argv[2], did, sizeof(did), &dpath);
	if (src_remote == dst_remote)
		return cli_usage_error("sandbox cp", CP_USAGE,
		                       "one side must be ID:/PATH in a sandbox, the other local");
	return src_remote ? download(c, sid, spath, argv[2]) : upload(c, argv[1], did, dpath);
}
