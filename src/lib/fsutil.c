#include "fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "macros.h"

int fs_write_at(int dirfd, const char *path, const char *data, size_t len)
{
	_cleanup_close_ int fd = openat(dirfd, path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	ssize_t n = write(fd, data, len);
	if (n < 0)
		return -errno;
	if ((size_t)n != len)
		return -EIO;
	return 0;
}

int fs_write_str_at(int dirfd, const char *path, const char *s)
{
	return fs_write_at(dirfd, path, s, strlen(s));
}

ssize_t fs_read_at(int dirfd, const char *path, char *buf, size_t size)
{
	if (size == 0)
		return -EINVAL;
	_cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	size_t off = 0;
	while (off < size - 1) {
		ssize_t n = read(fd, buf + off, size - 1 - off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		off += n;
	}
	buf[off] = '\0';
	return off;
}

int fs_read_u64_at(int dirfd, const char *path, unsigned long long *ret)
{
	char buf[64];
	ssize_t n = fs_read_at(dirfd, path, buf, sizeof(buf));
	if (n < 0)
		return n;
	if (strncmp(buf, "max", 3) == 0) {
		*ret = UINT64_MAX;
		return 0;
	}
	char *end;
	errno = 0;
	if (buf[0] < '0' || buf[0] > '9')
		return -EINVAL;
	unsigned long long v = strtoull(buf, &end, 10);
	if (errno || end == buf)
		return -EINVAL;
	*ret = v;
	return 0;
}

int fs_mkdir_p(const char *path, mode_t mode)
{
	char buf[4096];
	size_t len = strlen(path);
	if (len == 0 || len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int rm_rf_children(int dfd)
{
	DIR *d = fdopendir(dfd);
	if (!d) {
		int r = -errno;
		close(dfd);
		return r;
	}
	int ret = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		int r = fs_rm_rf_at(dirfd(d), de->d_name);
		if (r < 0 && ret == 0)
			ret = r;
	}
	closedir(d);
	return ret;
}

int fs_rm_rf_at(int dirfd, const char *name)
{
	if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	int r = rm_rf_children(fd);
	if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return r < 0 ? r : -errno;
	return r;
}

unsigned long long fs_keyed_u64(const char *text, const char *key)
{
	size_t klen = strlen(key);
	for (const char *p = text; p && *p;) {
		if (strncmp(p, key, klen) == 0 && p[klen] == ' ')
			return strtoull(p + klen + 1, NULL, 10);
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return 0;
}

int fs_close_all_except(const int *keep, size_t n)
{
	/* keep is small; close every gap between kept fds, from 3 up. */
	int lo = 3;
	for (;;) {
		int next = -1;
		for (size_t i = 0; i < n; i++)
			if (keep[i] >= lo && (next < 0 || keep[i] < next))
				next = keep[i];
		if (next < 0)
			return syscall(SYS_close_range, lo, ~0U, 0) < 0 ? -errno : 0;
		if (next > lo && syscall(SYS_close_range, lo, next - 1, 0) < 0)
			return -errno;
		lo = next + 1;
	}
}

int proc_stat_start_time(const char *stat, unsigned long long *ret)
{
	/* "pid (comm) state ppid …": comm may hold spaces and parens, so count from the last ')'.
	 * starttime is field 22, the 20th after it. */
	const char *p = strrchr(stat, ')');
	if (!p)
		return -EINVAL;
	p++;
	for (int field = 3; field < 22; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return -EINVAL;
	}
	char *end;
	errno = 0;
	unsigned long long v = strtoull(p + 1, &end, 10);
	if (errno || end == p + 1)
		return -EINVAL;
	*ret = v;
	return 0;
}

int proc_start_time(pid_t pid, unsigned long long *ret)
{
	char path[64], stat[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	ssize_t n = fs_read_at(AT_FDCWD, path, stat, sizeof(stat));
	if (n < 0)
		return (int)n;
	return proc_stat_start_time(stat, ret);
}

int proc_pidfd_open(pid_t pid, unsigned long long start)
{
	/* Open first, then check: the pidfd pins this process, so a start time that matches
	 * after the open means the pidfd is that process's, not a later one's with its pid. */
	if (pid <= 0)
		return -ESRCH;
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd < 0)
		return -errno;
	unsigned long long now;
	if (proc_start_time(pid, &now) < 0 || now != start) {
		close(fd);
		return -ESRCH;
	}
	struct pollfd p = {.fd = fd, .events = POLLIN};
	if (poll(&p, 1, 0) > 0) { /* exited: a zombie waiting for its parent */
		close(fd);
		return -ESRCH;
	}
	return fd;
}
