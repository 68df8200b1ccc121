/* The runtime's on-host state and the messages between the runtime and a sandbox's init.
 * <run>/<instance>/<sandbox id>/lock is flock'ed by the sandbox's owner (and its cleanup helper)
 * for as long as either lives: gc takes the lock to know a sandbox is abandoned. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../lib/fsutil.h"
#include "../lib/id.h"
#include "internal.h"

int state_sandbox_dir_create(const struct rt *rt, const char *id, int *ret_lock_fd,
                             struct sk_error *err)
{
	/* Made under a dot-name and renamed once locked, so gc never sees it unlocked. */
	char tmp[512], final[512];
	snprintf(tmp, sizeof(tmp), "%s/.new-%d-%s", rt->inst_dir, (int)getpid(), id);
	snprintf(final, sizeof(final), "%s/%s", rt->inst_dir, id);
	if (mkdir(tmp, 0700) < 0)
		return sk_error_errno(err, -errno, "mkdir %s", tmp);
	_cleanup_close_ int dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_close_ int lock =
	    dfd < 0 ? -1 : openat(dfd, "lock", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	/* Waited for: a gc looking whether the directory is abandoned holds it for a moment. */
	if (lock < 0 || flock(lock, LOCK_EX) < 0 || rename(tmp, final) < 0) {
		int r = -errno;
		fs_rm_rf_at(AT_FDCWD, tmp);
		return sk_error_errno(err, r, "make state directory %s", final);
	}
	*ret_lock_fd = TAKE_FD(lock);
	return 0;
}

int state_sandbox_dir_remove(const char *inst_dir, const char *id)
{
	/* The directory holds only our few files (the sandbox's layers live in a tmpfs mounted over
	 * it in the sandbox's own mount namespace). No allocation: the cleanup helper calls this.
	 */
	static const char *const FILES[] = {"lock",     "init",   "init.tmp", "meta",
	                                    "meta.tmp", "events", "stdout",   "stderr"};
	char path[512];
	for (size_t i = 0; i < ARRAY_SIZE(FILES); i++) {
		snprintf(path, sizeof(path), "%s/%s/%s", inst_dir, id, FILES[i]);
		if (unlink(path) < 0 && errno != ENOENT)
			return -errno;
	}
	snprintf(path, sizeof(path), "%s/%s", inst_dir, id);
	if (rmdir(path) == 0 || errno == ENOENT)
		return 0;
	/* Files its owner added (a spawner's exec output): only a detached sandbox has them, and
	 * the cleanup helper, which must not allocate, never serves a detached one. */
	if (errno == ENOTEMPTY || errno == EEXIST)
		return fs_rm_rf_at(AT_FDCWD, path);
	return -errno;
}

int state_sandbox_is_alive(const struct rt *rt, const char *id)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s/lock", rt->inst_dir, id);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK)
		return 1; /* its runtime holds it */
	/* A detached sandbox lives as long as its init. */
	struct state_init si;
	if (state_init_read(rt->inst_dir, id, &si) < 0)
		return 0;
	_cleanup_close_ int pidfd = state_init_pidfd(&si);
	return pidfd >= 0;
}

int state_new_dir_abandoned(int inst_dirfd, const char *name)
{
	char lock[300];
	snprintf(lock, sizeof(lock), "%s/lock", name);
	_cleanup_close_ int fd = openat(inst_dirfd, lock, O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0)
		return 0; /* its maker holds it */
	/* No lock yet, or one nobody holds: its maker is between mkdir and creating it, between
	 * creating and locking it, or died there. The name says who made it (".new-<pid>-<id>"):
	 * gone, it is abandoned; a live pid may be a reuse, so the age decides then. */
	int maker = atoi(name + 5);
	if (maker > 0 && kill(maker, 0) < 0 && errno == ESRCH)
		return 1;
	/* A name without its maker's pid is no live start's. */
	if (fd >= 0 && maker <= 0)
		return 1;
	struct stat st;
	if (fstatat(inst_dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	return time(NULL) - st.st_mtime > STATE_NEW_DIR_GRACE_S;
}

int state_new_dir_name_valid(const char *name)
{
	/* ".new-<pid>-sb-…" (or ".new-sb-…") */
	const char *p = name + 5;
	p += strspn(p, "0123456789");
	if (p != name + 5) {
		if (*p != '-')
			return 0;
		p++;
	}
	return id_is_valid("sb-", p);
}
