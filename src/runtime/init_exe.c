/* skiff-init: the small static program a detached sandbox's init execs into once its command
 * runs. init is born a copy of whatever started the sandbox (skiff-box, or the worker's spawner,
 * a fork of skiffd with its libraries); for a sandbox that idles for hours that copy is what it
 * costs: the dirtied pages, the libraries' relocations, the page tables. After the exec, init
 * holds a few pages of its own, and every sandbox shares skiff-init's text.
 *
 * The exec must not hand the sandbox anything: init has no_new_privs and no capabilities (or,
 * where it starts execs, just its commands' set), so the exec grants none (the kernel caps what
 * an exec gains at what the process had, under no_new_privs). The program must not be readable by
 * the sandbox's root, or the exec would make init dumpable (ptrace-able, /proc/1/mem) in the
 * sandbox's eyes: the kernel makes a process that execs a file it can't read not dumpable. So the
 * file must be root's and not readable by others (the build makes it 0711); otherwise we exec a
 * sealed memfd copy of it, mode 0711. Even so, "not dumpable" means what fs.suid_dumpable says:
 * where it is 1, init does not exec. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../lib/fsutil.h"
#include "internal.h"

#define INIT_EXE_NAME      "skiff-init"
#define INIT_EXE_MAX_BYTES (16 << 20) /* a static binary of ours: a few hundred KiB */
#define INIT_EXE_ENV       "SKIFF_INIT"

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif

/* A regular file, root's, that no one but root can change. */
static int exe_trusted(const struct stat *st)
{
	return S_ISREG(st->st_mode) && st->st_uid == 0 && !(st->st_mode & 022) &&
	       (st->st_mode & 0111) == 0111 && st->st_size > 0 && st->st_size <= INIT_EXE_MAX_BYTES;
}

/* A sealed copy of fd in memory, mode 0711. */
static int exe_memfd(int fd, off_t size)
{
	int mfd = memfd_create(INIT_EXE_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
	if (mfd < 0 && errno == EINVAL) /* a kernel older than 6.3 has no MFD_EXEC */
		mfd = memfd_create(INIT_EXE_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0)
		return -1;
	off_t off = 0;
	while (off < size) {
		ssize_t n = sendfile(mfd, fd, &off, (size_t)(size - off));
		if (n <= 0)
			goto fail;
	}
	if (fchmod(mfd, 0711) < 0 ||
	    fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
		goto fail;
	return mfd;
fail:
	close(mfd);
	return -1;
}

/* Whether fd is skiff-init, of this runtime's version: its note is in the first page. The
 * checks above make the file root's; a directory on the way there, or a hard link, could
 * still give another root-owned program the name. */
static int exe_marked(int fd)
{
	static const struct rt_init_note want = RT_INIT_NOTE;
	char page[4096];
	ssize_t n = pread(fd, page, sizeof(page), 0);
	return n > 0 && memmem(page, (size_t)n, &want, sizeof(want)) != NULL;
}

static int exe_open_at(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) < 0 || !exe_trusted(&st) || !exe_marked(fd)) {
		close(fd);
		return -1;
	}
	if (!(st.st_mode & 044))
		return fd;
	int mfd = exe_memfd(fd, st.st_size);
	close(fd);
	return mfd;
}

void rt_init_exe_open(struct rt *rt)
{
	rt->init_exe_fd = -1;
	const char *given = getenv(INIT_EXE_ENV);
	if (given && *given) {
		rt->init_exe_fd = exe_open_at(given);
		return;
	}
	/* Beside the running program (build/bin/skiff-init next to skiff-box and skiffd), or in
	 * ../bin from a program in a sibling directory (the unit tests in build/tests). */
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return;
	self[n] = '\0';
	char *slash = strrchr(self, '/');
	if (!slash)
		return;
	*slash = '\0';
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/" INIT_EXE_NAME, self);
	rt->init_exe_fd = exe_open_at(path);
	if (rt->init_exe_fd < 0) {
		snprintf(path, sizeof(path), "%s/../bin/" INIT_EXE_NAME, self);
		rt->init_exe_fd = exe_open_at(path);
	}
}

/* Whether init, about to exec, would come out of the exec as closed as it went in. Under
 * no_new_privs an exec grants nothing; without it, an exec as root of the user namespace would
 * grant the bounding set. A process that execs a file it can't read gets the dumpability of
 * fs.suid_dumpable: 0 keeps init closed, 2 opens it to the host's root only (its memory map
 * belongs to the host's user namespace then), but 1 would open it to the sandbox's root, which
 * could then write init's memory (/proc/1/mem) and so speak for it on the runtime's socket. The
 * setting is the host's (a sysctl is not per namespace), read here just before the exec. */
static int exec_keeps_init_closed(void)
{
	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
		return 0;
	char v[8];
	ssize_t n = fs_read_at(AT_FDCWD, "/proc/sys/fs/suid_dumpable", v, sizeof(v));
	return n >= 1 && (v[0] == '0' || v[0] == '2') && (n == 1 || v[1] == '\n');
}

void rt_init_exe_run(int exe_fd, int sync_fd, int events_fd, pid_t main_pid, int serve_execs)
{
	if (!exec_keeps_init_closed())
		return;
	char a_sync[16], a_events[16], a_main[16];
	snprintf(a_sync, sizeof(a_sync), "%d", sync_fd);
	snprintf(a_events, sizeof(a_events), "%d", events_fd);
	snprintf(a_main, sizeof(a_main), "%d", (int)main_pid);
	char *const argv[] = {INIT_EXE_NAME,           a_sync, a_events, a_main,
	                      serve_execs ? "1" : "0", NULL};
	char *const envp[] = {NULL};
	/* The two fds cross the exec; skiff-init marks them close-on-exec again. */
	int keep[2] = {sync_fd, events_fd};
	for (int i = 0; i < 2; i++)
		if (keep[i] >= 0 && fcntl(keep[i], F_SETFD, 0) < 0)
			return;
	syscall(SYS_execveat, exe_fd, "", argv, envp, AT_EMPTY_PATH);
	for (int i = 0; i < 2; i++)
		if (keep[i] >= 0)
			fcntl(keep[i], F_SETFD, FD_CLOEXEC);
}
