/* Detached sandboxes: the state a sandbox leaves in <run>/<instance>/<id>/ so that any process
 * can find it again (attach), list it, exec into it and end it:
 *   init    "<pid> <start time> <uid slot>": a pid alone could be a later process's
 *   meta    JSON: when it was made and what it runs (for ls); "disk": the directory of its
 *           writable layer's subvolume (<data>/disk/<instance>), so that a kill or gc run for
 *           another data directory still removes it
 *   events  appended by init: "main <wait status>" when the main command ends, "exit <pid>
 *           <start time> <wait status>" for every other process it reaps (execs)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../lib/fsutil.h"
#include "disk.h"
#include "internal.h"

#define EVENTS_MAX_BYTES (4 * 1024 * 1024) /* what lookups read of the events log */

static void state_path(char *buf, size_t size, const char *inst_dir, const char *id,
                       const char *file)
{
	snprintf(buf, size, "%s/%s/%s", inst_dir, id, file);
}

int state_events_open(const char *inst_dir, const char *id, int *ret_fd, struct sk_error *err)
{
	char path[512];
	state_path(path, sizeof(path), inst_dir, id, "events");
	int fd =
	    open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
	if (fd < 0)
		return sk_error_errno(err, -errno, "open %s", path);
	*ret_fd = fd;
	return 0;
}

int state_output_open(const char *inst_dir, const char *id, int ret_fds[3], struct sk_error *err)
{
	static const char *const NAMES[] = {NULL, "stdout", "stderr"};
	int fds[3] = {-1, -1, -1};
	fds[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fds[0] < 0)
		return sk_error_errno(err, -errno, "open /dev/null");
	for (int i = 1; i < 3; i++) {
		char path[512];
		state_path(path, sizeof(path), inst_dir, id, NAMES[i]);
		fds[i] = open(
		    path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
		if (fds[i] < 0) {
			int r = -errno;
			for (int k = 0; k < i; k++)
				close(fds[k]);
			return sk_error_errno(err, r, "open %s", path);
		}
	}
	memcpy(ret_fds, fds, sizeof(fds));
	return 0;
}

/* Write data to dir/name through name.tmp and a rename: readers see all or nothing. */
static int write_atomic(const char *inst_dir, const char *id, const char *name, const char *data)
{
	char tmp[512], final[512];
	snprintf(tmp, sizeof(tmp), "%s/%s/%s.tmp", inst_dir, id, name);
	state_path(final, sizeof(final), inst_dir, id, name);
	_cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	size_t len = strlen(data);
	if (write(fd, data, len) != (ssize_t)len)
		return -EIO;
	return rename(tmp, final) < 0 ? -errno : 0;
}

int state_sandbox_record(struct rt_sandbox *sb, const struct spec *spec, struct sk_error *err)
{
	const char *inst_dir = sb->rt->inst_dir;
	unsigned long long start;
	int r = proc_start_time(sb->pid, &start);
	if (r < 0)
		return sk_error_errno(err, r, "read init's start time");
	sb->init_start = start;
	json_t *cmd = json_array();
	for (size_t i = 0; spec->argv && i < spec->argc; i++)
		json_array_append_new(cmd, json_string(spec->argv[i]));
	char created[32];
	time_t now = time(NULL);
	struct tm tm;
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
	snprintf(sb->label, sizeof(sb->label), "%s", spec->label ? spec->label : "");
	json_t *meta = json_pack("{s:s, s:s, s:s, s:o, s:I, s:f, s:I}", "id", sb->id, "label",
	                         sb->label, "created_at", created, "command", cmd, "memory_mib",
	                         (json_int_t)spec->memory_mib, "cpu", spec->cpu, "pids",
	                         (json_int_t)spec->pids);
	char disk[sizeof(sb->rt->disk.dir) + RT_INSTANCE_MAX_CHARS + 2];
	snprintf(disk, sizeof(disk), "%s/%s", sb->rt->disk.dir, sb->rt->instance);
	if (meta && sb->disk_fd >= 0)
		json_object_set_new(meta, "disk", json_string(disk));
	char *text = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
	json_decref(meta);
	if (!text)
		return sk_error_set(err, -ENOMEM, "out of memory");
	r = write_atomic(inst_dir, sb->id, "meta", text);
	free(text);
	if (r < 0)
		return sk_error_errno(err, r, "write the sandbox's meta");
	char line[96];
	snprintf(line, sizeof(line), "%d %llu %d %llu\n", (int)sb->pid, start, sb->slot.slot,
	         (unsigned long long)spec->pids);
	/* Written last: its presence says the sandbox is complete. */
	if ((r = write_atomic(inst_dir, sb->id, "init", line)) < 0)
		return sk_error_errno(err, r, "write the sandbox's init record");
	return 0;
}

int state_init_read(const char *inst_dir, const char *id, struct state_init *ret)
{
	char path[512], buf[128];
	state_path(path, sizeof(path), inst_dir, id, "init");
	ssize_t n = fs_read_at(AT_FDCWD, path, buf, sizeof(buf));
	if (n < 0)
		return (int)n;
	struct state_init si = {0};
	if (sscanf(buf, "%d %llu %d %llu", &si.pid, &si.start, &si.slot, &si.pids) < 3 ||
	    si.pid <= 0)
		return -EBADMSG;
	*ret = si;
	return 0;
}

int state_init_pidfd(const struct state_init *si)
{
	return proc_pidfd_open(si->pid, si->start);
}

/* Find in the events log the last line starting with prefix; parse the wait status after it.
 * The log only grows (one line per exec, for as long as the sandbox lives) and what is asked
 * for is nearly always recent: read its tail, a window that grows up to EVENTS_MAX_BYTES until
 * the line is found. A line older than that window is forgotten. */
static int events_find(const char *inst_dir, const char *id, const char *prefix, int *ret_status)
{
	char path[512];
	state_path(path, sizeof(path), inst_dir, id, "events");
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	size_t plen = strlen(prefix);
	_cleanup_free_ char *buf = NULL;
	for (off_t window = 64 * 1024;; window *= 4) {
		if (window > EVENTS_MAX_BYTES)
			window = EVENTS_MAX_BYTES;
		/* From one byte before the window, so that a line starting right at it is seen
		 * whole: what precedes the first newline is the end of an earlier line. */
		off_t off = st.st_size > window ? st.st_size - window - 1 : 0;
		free(buf);
		buf = malloc((size_t)window + 2);
		if (!buf)
			return -ENOMEM;
		ssize_t n = pread(fd, buf, (size_t)window + 1, off);
		if (n < 0)
			return -errno;
		buf[n] = '\0';
		char *line = buf;
		if (off > 0) {
			char *nl = strchr(buf, '\n');
			line = nl ? nl + 1 : buf + n;
		}
		int found = -ENOENT;
		while (*line) {
			char *nl = strchr(line, '\n');
			if (!nl)
				break; /* a line still being written */
			*nl = '\0';
			if (!strncmp(line, prefix, plen) && line[plen] == ' ') {
				*ret_status = atoi(line + plen + 1);
				found = 0;
			}
			line = nl + 1;
		}
		if (found == 0 || off == 0 || window >= EVENTS_MAX_BYTES)
			return found;
	}
}

int state_events_main(const char *inst_dir, const char *id, int *ret_status)
{
	return events_find(inst_dir, id, "main", ret_status);
}

int state_events_exit(const char *inst_dir, const char *id, pid_t nspid, unsigned long long start,
                      int *ret_status)
{
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "exit %d %llu", (int)nspid, start);
	return events_find(inst_dir, id, prefix, ret_status);
}

int state_disk_remove(const struct rt *rt, const char *id)
{
	char path[512], meta[8192], where[4096] = "";
	state_path(path, sizeof(path), rt->inst_dir, id, "meta");
	if (fs_read_at(AT_FDCWD, path, meta, sizeof(meta)) <= 0)
		return -ENOENT;
	json_t *m = json_loads(meta, 0, NULL);
	const char *disk = json_string_value(json_object_get(m, "disk"));
	int fd = disk ? open(disk, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (disk)
		snprintf(where, sizeof(where), "%s", disk);
	json_decref(m);
	if (fd < 0)
		return -ENOENT;
	int r = disk_subvol_remove(fd, id);
	close(fd);
	/* Whoever ends a sandbox of another data directory (kill takes no --data) is the last to
	 * know that disk: unmounted here once unused, or nothing would ever unmount it. */
	if (r == 0)
		disk_remove_if_idle_at(rt, where);
	return r;
}

/* The label recorded in the sandbox's meta, or "". */
static void state_label_read(const char *inst_dir, const char *id, char *buf, size_t size)
{
	char path[512], meta[8192];
	buf[0] = '\0';
	state_path(path, sizeof(path), inst_dir, id, "meta");
	if (fs_read_at(AT_FDCWD, path, meta, sizeof(meta)) <= 0)
		return;
	json_t *m = json_loads(meta, 0, NULL);
	const char *label = json_string_value(json_object_get(m, "label"));
	snprintf(buf, size, "%s", label ? label : "");
	json_decref(m);
}

int rt_sandbox_attach(struct rt *rt, const char *id, struct rt_sandbox **ret, struct sk_error *err)
{
	if (!id_is_valid("sb-", id))
		return sk_error_set(err, -SK_EINVAL_SPEC, "'%.64s' is not a sandbox id (sb-…)", id);
	struct state_init si;
	int r = state_init_read(rt->inst_dir, id, &si);
	if (r == -ENOENT) {
		char dir[512];
		snprintf(dir, sizeof(dir), "%s/%s", rt->inst_dir, id);
		if (access(dir, F_OK) == 0)
			return sk_error_set(
			    err, -EBUSY,
			    "sandbox %s is not detached: it runs in the foreground of "
			    "the process that started it",
			    id);
		return sk_error_set(err, -ENOENT, "no sandbox %s in instance %s", id, rt->instance);
	}
	if (r < 0)
		return sk_error_errno(err, r, "read the state of sandbox %s", id);
	struct rt_sandbox *sb = calloc(1, sizeof(*sb));
	if (!sb)
		return sk_error_set(err, -ENOMEM, "out of memory");
	sb->rt = rt;
	sb->attached = 1;
	sb->flags = RT_START_DETACHED;
	sb->sync_fd = sb->lock_fd = sb->helper_fd = sb->oom_fd = sb->events_fd = sb->disk_fd =
	    sb->tmpfs_fd = -1;
	snprintf(sb->id, sizeof(sb->id), "%s", id);
	snprintf(sb->owner, sizeof(sb->owner), "%s %s", rt->instance, id);
	snprintf(sb->scratch, sizeof(sb->scratch), "%s/%s", rt->inst_dir, id);
	sb->slot.slot = si.slot;
	sb->init_start = si.start;
	sb->base.pids = si.pids; /* execs get the sandbox's RLIMIT_NPROC too */
	sb->pidfd = state_init_pidfd(&si);
	if (sb->pidfd >= 0) {
		sb->pid = si.pid;
	} else {
		/* init is gone: the sandbox ended; what is known is in the events log. */
		sb->pid = 0;
		sb->reaped = 1;
		int status;
		if (state_events_main(rt->inst_dir, id, &status) == 0) {
			sb->exit_known = 1;
			sb->exit_status = status;
		}
	}
	if (cgroup_sandbox_open(&rt->cg, rt->instance, id, &sb->cg) == 0)
		sb->cg_made = 1;
	state_label_read(rt->inst_dir, id, sb->label, sizeof(sb->label));
	*ret = sb;
	return 0;
}

int rt_sandbox_running(const struct rt_sandbox *sb)
{
	if (sb->pidfd < 0 || sb->reaped)
		return 0;
	struct pollfd p = {.fd = sb->pidfd, .events = POLLIN};
	return poll(&p, 1, 0) == 0;
}

int rt_sandbox_list(struct rt *rt, struct rt_sandbox_info **ret, struct sk_error *err)
{
	_cleanup_close_ int dfd = open(rt->inst_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct rt_sandbox_info *list = NULL;
	int n = 0, cap = 0;
	DIR *d = dfd >= 0 ? fdopendir(TAKE_FD(dfd)) : NULL;
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (!id_is_valid("sb-", de->d_name))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			struct rt_sandbox_info *nl = realloc(list, cap * sizeof(*list));
			if (!nl) {
				closedir(d);
				free(list);
				return sk_error_set(err, -ENOMEM, "out of memory");
			}
			list = nl;
		}
		struct rt_sandbox_info *info = &list[n++];
		memset(info, 0, sizeof(*info));
		snprintf(info->id, sizeof(info->id), "%s", de->d_name);
		char path[512], meta[8192];
		state_path(path, sizeof(path), rt->inst_dir, de->d_name, "meta");
		if (fs_read_at(AT_FDCWD, path, meta, sizeof(meta)) > 0) {
			json_t *m = json_loads(meta, 0, NULL);
			const char *created = json_string_value(json_object_get(m, "created_at"));
			const char *label = json_string_value(json_object_get(m, "label"));
			snprintf(info->label, sizeof(info->label), "%s", label ? label : "");
			snprintf(info->created_at, sizeof(info->created_at), "%s",
			         created ? created : "");
			json_t *cmd = json_object_get(m, "command");
			size_t i, off = 0;
			json_t *a;
			json_array_foreach (cmd, i, a) {
				int w = snprintf(info->command + off, sizeof(info->command) - off,
				                 "%s%s", i ? " " : "",
				                 json_string_value(a) ? json_string_value(a) : "");
				if (w < 0 || (size_t)w >= sizeof(info->command) - off)
					break;
				off += (size_t)w;
			}
			json_decref(m);
		}
		struct state_init si;
		if (state_init_read(rt->inst_dir, de->d_name, &si) < 0) {
			info->state = state_sandbox_is_alive(rt, de->d_name) ? RT_STATE_FOREGROUND
			                                                     : RT_STATE_LOST;
			continue;
		}
		int pidfd = state_init_pidfd(&si);
		if (pidfd >= 0) {
			close(pidfd);
			info->state = RT_STATE_RUNNING;
			info->pid = si.pid;
		} else if (state_events_main(rt->inst_dir, de->d_name, &info->exit_status) == 0) {
			info->state = RT_STATE_EXITED;
		} else {
			info->state = RT_STATE_LOST;
		}
	}
	if (d)
		closedir(d);
	*ret = list;
	return n;
}
