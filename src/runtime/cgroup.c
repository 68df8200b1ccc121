/* Controller detection and the sandbox cgroup life cycle, common to v1 and v2. */
#include "cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../lib/fsutil.h"

static const char *const CTRL_NAMES[CG_NCTRL] = {"cpu", "cpuacct", "memory", "pids"};

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape_octal(char *s)
{
	char *w = s;
	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '7' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 3;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

static int opt_has(const char *opts, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = opts; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
		if (strncmp(p, name, n) == 0 && (p[n] == ',' || p[n] == '\0'))
			return 1;
	return 0;
}

static int layout_add(struct cg_layout *l, const char *mount, int version)
{
	for (int i = 0; i < l->nhier; i++)
		if (!strcmp(l->hier[i].mount, mount))
			return i;
	if (l->nhier == CG_MAX_HIER)
		return -1;
	struct cg_hier *h = &l->hier[l->nhier];
	snprintf(h->mount, sizeof(h->mount), "%s", mount);
	h->version = version;
	h->ctrls = 0;
	return l->nhier++;
}

int cgroup_layout_detect(const char *mountinfo_path, struct cg_layout *ret, struct sk_error *err)
{
	FILE *f = fopen(mountinfo_path, "re");
	if (!f)
		return sk_error_errno(err, -errno, "open %s", mountinfo_path);
	char v1_mount[CG_NCTRL][CG_PATH_BYTES] = {{0}};
	char v2_mount[CG_PATH_BYTES] = "";
	char line[4096];
	while (fgets(line, sizeof(line), f)) {
		/* id parent maj:min root mountpoint opts [optional…] - fstype source superopts */
		char *sep = strstr(line, " - ");
		if (!sep)
			continue;
		*sep = '\0';
		char root[CG_PATH_BYTES], mp[CG_PATH_BYTES], fstype[64], source[256], super[1024];
		if (sscanf(line, "%*s %*s %*s %511s %511s", root, mp) != 2)
			continue;
		if (sscanf(sep + 3, "%63s %255s %1023s", fstype, source, super) != 3)
			continue;
		if (strcmp(root, "/") != 0) /* a bind of a sub-cgroup: not the hierarchy's root */
			continue;
		unescape_octal(mp);
		if (!strcmp(fstype, "cgroup2")) {
			if (!v2_mount[0])
				snprintf(v2_mount, sizeof(v2_mount), "%s", mp);
		} else if (!strcmp(fstype, "cgroup")) {
			for (int c = 0; c < CG_NCTRL; c++)
				if (opt_has(super, CTRL_NAMES[c]) && !v1_mount[c][0])
					snprintf(v1_mount[c], sizeof(v1_mount[c]), "%s", mp);
		}
	}
	fclose(f);

	char v2_ctrls[512] = "";
	if (v2_mount[0]) {
		char path[CG_PATH_BYTES + 32];
		snprintf(path, sizeof(path), "%s/cgroup.controllers", v2_mount);
		if (fs_read_at(AT_FDCWD, path, v2_ctrls, sizeof(v2_ctrls)) < 0)
			v2_ctrls[0] = '\0';
	}

	struct cg_layout l = {.nhier = 0};
	for (int c = 0; c < CG_NCTRL; c++) {
		l.where[c] = -1;
		int idx = -1;
		char word[32];
		snprintf(word, sizeof(word), "%s", CTRL_NAMES[c]);
		int in_v2 = 0;
		for (char *p = v2_ctrls; *p;) {
			size_t n = strcspn(p, " \n");
			if (n == strlen(word) && !strncmp(p, word, n))
				in_v2 = 1;
			p += n;
			p += strspn(p, " \n");
		}
		if (in_v2)
			idx = layout_add(&l, v2_mount, 2);
		else if (v1_mount[c][0])
			idx = layout_add(&l, v1_mount[c], 1);
		if (idx >= 0) {
			l.where[c] = idx;
			l.hier[idx].ctrls |= 1u << c;
		}
	}
	/* On v2, cpu usage comes from cpu.stat: cpuacct has no v2 counterpart. */
	for (int c = 0; c < CG_NCTRL; c++) {
		if (c == CG_CPUACCT)
			continue;
		if (l.where[c] < 0)
			return sk_error_set(err, -ENOTSUP,
			                    "cgroup controller '%s' is not available (neither "
			                    "cgroup v1 nor v2 offers it)",
			                    CTRL_NAMES[c]);
	}
	*ret = l;
	return 0;
}

static int open_hier_root(const struct cg_hier *h)
{
	return open(h->mount, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

int cgroup_parent_ensure(const struct cg_layout *l, const char *instance,
                         const struct cg_limits *agg, struct sk_error *err)
{
	char name[64];
	snprintf(name, sizeof(name), "skiff-%s", instance);
	for (int i = 0; i < l->nhier; i++) {
		const struct cg_hier *h = &l->hier[i];
		_cleanup_close_ int root = open_hier_root(h);
		if (root < 0)
			return sk_error_errno(err, -errno, "open cgroup hierarchy %s", h->mount);
		if (h->version == 2) {
			/* Controllers must be on at the root for skiff-<instance>, and there for
			 * sandboxes. Before mkdir: a failure must not leave a parent without
			 * limits that the next call would take as done. */
			int r = cgroup_v2_enable_controllers(root, h->ctrls, err);
			if (r < 0)
				return sk_error_prefix(err, "cgroup %s", h->mount);
		}
		int created = mkdirat(root, name, 0755) == 0;
		if (!created && errno != EEXIST)
			return sk_error_errno(err, -errno, "create cgroup %s/%s", h->mount, name);
		if (!created) {
			/* Older versions set memory.oom.group on the parent too. */
			if (h->version == 2 && (h->ctrls & (1u << CG_MEMORY))) {
				_cleanup_close_ int dfd =
				    openat(root, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
				if (dfd >= 0 && cgroup_v2_oom_group_set(dfd, 0, err) < 0)
					return sk_error_prefix(err, "cgroup %s/%s", h->mount, name);
			}
			continue;
		}
		_cleanup_close_ int dfd = openat(root, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			return sk_error_errno(err, -errno, "open cgroup %s/%s", h->mount, name);
		int r = h->version == 2 ? cgroup_v2_enable_controllers(dfd, h->ctrls, err) : 0;
		if (r == 0)
			r = h->version == 2 ? cgroup_v2_limits_apply(dfd, h->ctrls, agg, err)
			                    : cgroup_v1_limits_apply(dfd, h->ctrls, agg, err);
		if (r < 0) {
			unlinkat(root, name, AT_REMOVEDIR);
			return sk_error_prefix(err, "cgroup %s/%s", h->mount, name);
		}
	}
	return 0;
}

void cgroup_sandbox_close(struct cg_sandbox *cg)
{
	for (int i = 0; i < CG_MAX_HIER; i++) {
		if (cg->dirfd[i] >= 0)
			close(cg->dirfd[i]);
		cg->dirfd[i] = -1;
	}
}

static void sandbox_init(struct cg_sandbox *cg, const struct cg_layout *l, const char *instance,
                         const char *name)
{
	cg->layout = l;
	for (int i = 0; i < CG_MAX_HIER; i++)
		cg->dirfd[i] = -1;
	snprintf(cg->rel, sizeof(cg->rel), "skiff-%s/%s", instance, name);
}

int cgroup_sandbox_create(const struct cg_layout *l, const char *instance, const char *name,
                          const struct cg_limits *lim, struct cg_sandbox *cg, struct sk_error *err)
{
	sandbox_init(cg, l, instance, name);
	for (int i = 0; i < l->nhier; i++) {
		const struct cg_hier *h = &l->hier[i];
		_cleanup_close_ int root = open_hier_root(h);
		if (root < 0) {
			sk_error_errno(err, -errno, "open cgroup hierarchy %s", h->mount);
			goto fail;
		}
		if (mkdirat(root, cg->rel, 0755) < 0) {
			sk_error_errno(err, -errno, "create cgroup %s/%s", h->mount, cg->rel);
			goto fail;
		}
		cg->dirfd[i] = openat(root, cg->rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (cg->dirfd[i] < 0) {
			sk_error_errno(err, -errno, "open cgroup %s/%s", h->mount, cg->rel);
			unlinkat(root, cg->rel, AT_REMOVEDIR);
			goto fail;
		}
		int r = h->version == 2 ? cgroup_v2_limits_apply(cg->dirfd[i], h->ctrls, lim, err)
		                        : cgroup_v1_limits_apply(cg->dirfd[i], h->ctrls, lim, err);
		/* An OOM kill in a sandbox takes all of it (on v1 the runtime does that itself). */
		if (r == 0 && h->version == 2 && (h->ctrls & (1u << CG_MEMORY)))
			r = cgroup_v2_oom_group_set(cg->dirfd[i], 1, err);
		if (r < 0) {
			sk_error_prefix(err, "cgroup %s/%s", h->mount, cg->rel);
			goto fail;
		}
	}
	return 0;
fail : {
	int code = err ? err->code : -EIO;
	cgroup_sandbox_destroy(cg, 0, NULL);
	return code;
}
}

int cgroup_sandbox_open(const struct cg_layout *l, const char *instance, const char *name,
                        struct cg_sandbox *cg)
{
	sandbox_init(cg, l, instance, name);
	int found = 0;
	for (int i = 0; i < l->nhier; i++) {
		_cleanup_close_ int root = open_hier_root(&l->hier[i]);
		if (root < 0)
			continue;
		cg->dirfd[i] = openat(root, cg->rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		found += cg->dirfd[i] >= 0;
	}
	return found ? 0 : -ENOENT;
}

int cgroup_sandbox_attach(const struct cg_sandbox *cg, pid_t pid, struct sk_error *err)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%d", (int)pid);
	for (int i = 0; i < cg->layout->nhier; i++) {
		int r = fs_write_str_at(cg->dirfd[i], "cgroup.procs", buf);
		if (r < 0)
			return sk_error_errno(err, r, "move pid %d into cgroup %s/%s", (int)pid,
			                      cg->layout->hier[i].mount, cg->rel);
	}
	return 0;
}

int cgroup_sandbox_oom_fd(const struct cg_sandbox *cg, int *ret_fd, short *ret_events,
                          struct sk_error *err)
{
	int i = cg->layout->where[CG_MEMORY];
	if (cg->layout->hier[i].version == 1) {
		*ret_events = POLLIN;
		return cgroup_v1_oom_fd(cg->dirfd[i], ret_fd, err);
	}
	int fd = openat(cg->dirfd[i], "memory.events", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return sk_error_errno(err, -errno, "open memory.events");
	/* A kernfs file polls ready until it has been read once. */
	char buf[512];
	if (pread(fd, buf, sizeof(buf), 0) < 0) {
		int r = -errno;
		close(fd);
		return sk_error_errno(err, r, "read memory.events");
	}
	*ret_fd = fd;
	*ret_events = POLLPRI;
	return 0;
}

int cgroup_sandbox_usage(const struct cg_sandbox *cg, struct cg_usage *ret)
{
	struct cg_usage u = {0};
	for (int i = 0; i < cg->layout->nhier; i++) {
		if (cg->dirfd[i] < 0)
			continue;
		const struct cg_hier *h = &cg->layout->hier[i];
		if (h->version == 2)
			cgroup_v2_usage_read(cg->dirfd[i], h->ctrls, &u);
		else
			cgroup_v1_usage_read(cg->dirfd[i], h->ctrls, &u);
	}
	*ret = u;
	return 0;
}

/* SIGKILL each pid in dirfd's cgroup.procs; returns how many were listed. */
static int kill_procs(int dirfd)
{
	char buf[16384];
	ssize_t n = fs_read_at(dirfd, "cgroup.procs", buf, sizeof(buf));
	if (n <= 0)
		return 0;
	int count = 0;
	for (char *p = buf; *p;) {
		char *end;
		long pid = strtol(p, &end, 10);
		if (end == p)
			break;
		if (pid > 0) {
			kill((pid_t)pid, SIGKILL);
			count++;
		}
		p = end + strspn(end, "\n");
	}
	/* A buffer full of pids may have more behind it: report at least one more. */
	return (size_t)n == sizeof(buf) - 1 ? count + 1 : count;
}

int cgroup_sandbox_kill(const struct cg_sandbox *cg)
{
	int remaining = 0;
	for (int i = 0; i < cg->layout->nhier; i++) {
		if (cg->dirfd[i] < 0)
			continue;
		/* cgroup.kill (v2, Linux 5.14) is atomic against forks; what is listed after it
		 * is still signalled and counted. */
		if (cg->layout->hier[i].version == 2)
			fs_write_str_at(cg->dirfd[i], "cgroup.kill", "1");
		remaining += kill_procs(cg->dirfd[i]);
	}
	return remaining;
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

int cgroup_sandbox_destroy(struct cg_sandbox *cg, int timeout_ms, struct sk_error *err)
{
	const struct cg_layout *l = cg->layout;
	long long deadline = now_ms() + timeout_ms;
	int ret = 0;
	for (int i = 0; i < l->nhier; i++) {
		if (cg->dirfd[i] < 0)
			continue;
		_cleanup_close_ int root = open_hier_root(&l->hier[i]);
		for (;;) {
			if (root >= 0 && unlinkat(root, cg->rel, AT_REMOVEDIR) == 0)
				break;
			if (root < 0 || errno == ENOENT)
				break;
			if (errno != EBUSY || now_ms() >= deadline) {
				ret = sk_error_errno(err, -errno, "remove cgroup %s/%s",
				                     l->hier[i].mount, cg->rel);
				break;
			}
			/* Processes are still there: kill them all (on v2 through cgroup.kill,
			 * which no fork escapes) and give them a moment. Only on this path: a
			 * sandbox whose init was reaped has none, and its first rmdir succeeds. */
			cgroup_sandbox_kill(cg);
			struct timespec ts = {0, 200 * 1000};
			nanosleep(&ts, NULL);
		}
	}
	cgroup_sandbox_close(cg);
	return ret;
}

int cgroup_instance_list(const struct cg_layout *l, const char *instance, char ***ret)
{
	char **names = NULL;
	size_t n = 0;
	char parent[64];
	snprintf(parent, sizeof(parent), "skiff-%s", instance);
	for (int i = 0; i < l->nhier; i++) {
		_cleanup_close_ int root = open_hier_root(&l->hier[i]);
		if (root < 0)
			continue;
		int dfd = openat(root, parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			continue;
		DIR *d = fdopendir(dfd);
		if (!d) {
			close(dfd);
			continue;
		}
		struct dirent *de;
		while ((de = readdir(d))) {
			if (de->d_type != DT_DIR || de->d_name[0] == '.')
				continue;
			int dup = 0;
			for (size_t k = 0; k < n; k++)
				dup |= !strcmp(names[k], de->d_name);
			if (dup)
				continue;
			char **nn = realloc(names, (n + 2) * sizeof(char *));
			if (!nn)
				break;
			names = nn;
			if (!(names[n] = strdup(de->d_name)))
				break;
			names[++n] = NULL;
		}
		closedir(d);
	}
	if (!names && !(names = calloc(1, sizeof(char *))))
		return -ENOMEM;
	*ret = names;
	return (int)n;
}

int cgroup_parent_remove(const struct cg_layout *l, const char *instance)
{
	char name[64];
	snprintf(name, sizeof(name), "skiff-%s", instance);
	int ret = 0;
	for (int i = 0; i < l->nhier; i++) {
		_cleanup_close_ int root = open_hier_root(&l->hier[i]);
		if (root >= 0 && unlinkat(root, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
			ret = -errno;
	}
	return ret;
}
