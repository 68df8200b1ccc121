#include "busybox.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/fsutil.h"

#define APPLET_LIST_MAX_BYTES (64 * 1024)

static const char PASSWD[] = "root:x:0:0:root:/root:/bin/sh\n"
                             "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
static const char GROUP[] = "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n";

/* Run "<busybox> --list-full" and collect its output. */
static int applet_list(const char *busybox, char *buf, size_t size)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		int r = -errno;
		close(p[0]);
		close(p[1]);
		return r;
	}
	if (pid == 0) {
		dup2(p[1], 1);
		execl(busybox, "busybox", "--list-full", (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	size_t off = 0;
	ssize_t n;
	while (off < size - 1 && (n = read(p[0], buf + off, size - 1 - off)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		off += n;
	}
	buf[off] = '\0';
	close(p[0]);
	int status = -1;
	pid_t got;
	while ((got = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
		;
	if (got != pid)
		return -ECHILD;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 && off > 0 ? 0 : -ENOEXEC;
}

static int copy_file(const char *src, int dirfd, const char *dst, mode_t mode)
{
	_cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return -errno;
	struct stat st;
	if (fstat(in, &st) < 0)
		return -errno;
	_cleanup_close_ int out = openat(dirfd, dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (out < 0)
		return -errno;
	off_t off = 0;
	while (off < st.st_size) {
		ssize_t n = sendfile(out, in, &off, st.st_size - off);
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
	}
	return fchmod(out, mode) < 0 ? -errno : 0;
}

static int write_new(int dirfd, const char *name, const char *text, mode_t mode)
{
	_cleanup_close_ int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	size_t len = strlen(text);
	return write(fd, text, len) == (ssize_t)len ? 0 : -EIO;
}

static int build(const char *dir, const char *busybox, struct sk_error *err)
{
	static const char *const DIRS[] = {"bin", "sbin", "usr",     "usr/bin", "usr/sbin",
	                                   "etc", "root", "proc",    "sys",     "dev",
	                                   "tmp", "var",  "var/tmp", "home",    "run"};
	if (mkdir(dir, 0755) < 0)
		return sk_error_errno(err, -errno, "mkdir %s", dir);
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return sk_error_errno(err, -errno, "open %s", dir);
	for (size_t i = 0; i < ARRAY_SIZE(DIRS); i++) {
		mode_t mode = !strcmp(DIRS[i], "tmp") || !strcmp(DIRS[i], "var/tmp") ? 01777 : 0755;
		if (mkdirat(dfd, DIRS[i], mode) < 0 || fchmodat(dfd, DIRS[i], mode, 0) < 0)
			return sk_error_errno(err, -errno, "mkdir %s/%s", dir, DIRS[i]);
	}
	int r = copy_file(busybox, dfd, "bin/busybox", 0755);
	if (r < 0)
		return sk_error_errno(err, r, "copy %s (install busybox-static or set %s)", busybox,
		                      BUSYBOX_PATH_ENV);
	if ((r = write_new(dfd, "etc/passwd", PASSWD, 0644)) < 0 ||
	    (r = write_new(dfd, "etc/group", GROUP, 0644)) < 0 ||
	    (r = write_new(dfd, "etc/hostname", "sandbox\n", 0644)) < 0)
		return sk_error_errno(err, r, "write /etc files in %s", dir);
	_cleanup_free_ char *list = malloc(APPLET_LIST_MAX_BYTES);
	if (!list)
		return sk_error_set(err, -ENOMEM, "out of memory");
	if ((r = applet_list(busybox, list, APPLET_LIST_MAX_BYTES)) < 0)
		return sk_error_errno(err, r, "list the applets of %s", busybox);
	char *save = NULL;
	for (char *line = strtok_r(list, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!strcmp(line, "bin/busybox") || strstr(line, "..") || line[0] == '/')
			continue;
		/* An absolute target keeps the link right from any directory depth. */
		if (symlinkat("/bin/busybox", dfd, line) < 0 && errno != EEXIST)
			return sk_error_errno(err, -errno, "symlink %s/%s", dir, line);
	}
	return 0;
}

int image_busybox_ensure(const char *data_dir, const char *host_busybox, char *ret_path,
                         size_t size, struct sk_error *err)
{
	char parent[4096], final[4096], tmp[4096 + 32];
	snprintf(parent, sizeof(parent), "%s/rootfs", data_dir);
	int n = snprintf(final, sizeof(final), "%s/busybox", parent);
	if (n < 0 || (size_t)n >= size || (size_t)n >= sizeof(final))
		return sk_error_set(err, -ENAMETOOLONG, "data directory path too long");
	struct stat st;
	if (stat(final, &st) == 0) {
		memcpy(ret_path, final, n + 1);
		return 0;
	}
	int r = fs_mkdir_p(parent, 0755);
	if (r < 0)
		return sk_error_errno(err, r, "mkdir %s", parent);
	/* Of this thread: the server makes bases on a pool of threads, and two builds started
	 * together each make it at once (a name of the process alone, one removed the other's). */
	snprintf(tmp, sizeof(tmp), "%s/.busybox-%d-%d", parent, (int)getpid(), (int)gettid());
	fs_rm_rf_at(AT_FDCWD, tmp);
	if ((r = build(tmp, host_busybox ? host_busybox : BUSYBOX_HOST_PATH, err)) < 0) {
		fs_rm_rf_at(AT_FDCWD, tmp);
		return sk_error_prefix(err, "make the busybox root");
	}
	/* Another process may have won the race: theirs is as good as ours. */
	if (rename(tmp, final) < 0) {
		r = -errno;
		fs_rm_rf_at(AT_FDCWD, tmp);
		if (r != -ENOTEMPTY && r != -EEXIST)
			return sk_error_errno(err, r, "rename %s", tmp);
	}
	memcpy(ret_path, final, n + 1);
	return 0;
}
