#include "idmap.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../lib/fsutil.h"

int idmap_format_line(char *buf, size_t size, uid_t base, unsigned count)
{
	int n = snprintf(buf, size, "0 %u %u\n", (unsigned)base, count);
	return n < 0 || (size_t)n >= size ? -ENOBUFS : n;
}

static int uids_dir_open(const char *run_dir, int create)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/uids", run_dir);
	int r = create ? fs_mkdir_p(path, 0700) : 0;
	if (r < 0)
		return r;
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int idmap_slot_alloc(const char *run_dir, const char *owner, struct idmap_slot *ret,
                     struct sk_error *err)
{
	_cleanup_close_ int dfd = uids_dir_open(run_dir, 1);
	if (dfd < 0)
		return sk_error_errno(err, dfd, "open %s/uids", run_dir);
	unsigned start;
	if (getrandom(&start, sizeof(start), 0) != sizeof(start))
		start = (unsigned)getpid();
	for (unsigned i = 0; i < IDMAP_SLOTS; i++) {
		unsigned slot = (start + i) % IDMAP_SLOTS;
		char name[16];
		snprintf(name, sizeof(name), "%u", slot);
		_cleanup_close_ int fd =
		    openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0) {
			if (errno == EEXIST)
				continue;
			return sk_error_errno(err, -errno, "claim uid range slot %u", slot);
		}
		size_t len = strlen(owner);
		if (write(fd, owner, len) != (ssize_t)len) {
			int r = -errno;
			unlinkat(dfd, name, 0);
			return sk_error_errno(err, r ? r : -EIO, "write uid range slot %u", slot);
		}
		ret->slot = (int)slot;
		ret->base = IDMAP_BASE + slot * IDMAP_RANGE;
		return 0;
	}
	return sk_error_set(err, -EAGAIN, "no free uid range: all %u are in use", IDMAP_SLOTS);
}

int idmap_slot_release(const char *run_dir, int slot, const char *owner)
{
	if (slot < 0)
		return 0;
	_cleanup_close_ int dfd = uids_dir_open(run_dir, 0);
	if (dfd < 0)
		return dfd;
	char name[16], buf[256];
	snprintf(name, sizeof(name), "%d", slot);
	ssize_t n = fs_read_at(dfd, name, buf, sizeof(buf));
	if (n < 0)
		return n == -ENOENT ? 0 : (int)n;
	if (strcmp(buf, owner) != 0)
		return -EPERM;
	if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int idmap_slots_gc(const char *run_dir, const char *instance,
                   int (*alive)(const char *sbid, void *), void *ud)
{
	int dfd = uids_dir_open(run_dir, 0);
	if (dfd < 0)
		return dfd == -ENOENT ? 0 : dfd;
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return -errno;
	}
	size_t ilen = strlen(instance);
	int removed = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char buf[256];
		ssize_t n = fs_read_at(dirfd(d), de->d_name, buf, sizeof(buf));
		if (n < 0)
			continue;
		if (n == 0) {
			/* Claimed by a process that died before naming itself: free it once surely
			 * abandoned (the claim and the write are microseconds apart). */
			struct stat st;
			if (fstatat(dirfd(d), de->d_name, &st, 0) == 0 &&
			    time(NULL) - st.st_mtime > IDMAP_EMPTY_SLOT_GRACE_S &&
			    unlinkat(dirfd(d), de->d_name, 0) == 0)
				removed++;
			continue;
		}
		if (strncmp(buf, instance, ilen) != 0 || buf[ilen] != ' ')
			continue;
		if (alive(buf + ilen + 1, ud))
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == 0)
			removed++;
	}
	closedir(d);
	return removed;
}

int idmap_write_maps(pid_t pid, uid_t base, unsigned count, struct sk_error *err)
{
	char line[64], path[64];
	idmap_format_line(line, sizeof(line), base, count);
	snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
	int r = fs_write_str_at(AT_FDCWD, path, line);
	if (r < 0)
		return sk_error_errno(err, r, "write %s", path);
	snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)pid);
	r = fs_write_str_at(AT_FDCWD, path, line);
	if (r < 0)
		return sk_error_errno(err, r, "write %s", path);
	return 0;
}
