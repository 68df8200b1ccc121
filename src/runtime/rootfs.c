/* The sandbox's root filesystem, built inside its own user and mount namespaces:
 *   the writable layer is mounted over the scratch directory: the sandbox's btrfs subvolume
 *   (disk.c; its qgroup limit is the disk limit), or a tmpfs (its size is the disk limit, its
 *   pages are charged to the sandbox's memory cgroup); the runtime makes either and passes it
 *   to init as a detached mount, and keeps a handle on it (a snapshot reads it from outside);
 *   the image enters as an idmapped, read-only detached mount, moved in as overlayfs' lower layer;
 *   overlayfs (userxattr, as it is mounted in a user namespace) is the root; fresh /proc with
 *   sensitive paths masked, a minimal /dev, /sys read-only; then pivot_root. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../lib/timing.h"
#include "internal.h"

#define PROC_FLAGS (MS_NOSUID | MS_NODEV | MS_NOEXEC)

static const char *const DEV_NODES[] = {"null", "zero", "full", "random", "urandom", "tty"};
static const char *const PROC_MASKED_FILES[] = {
    "kcore", "keys", "sysrq-trigger", "timer_list", "sched_debug", "latency_stats", "timer_stats"};
static const char *const PROC_MASKED_DIRS[] = {"acpi", "scsi"};
static const char *const PROC_READONLY[] = {"sys", "irq", "bus", "fs"};

static int mount_at(struct sk_error *err, const char *src, const char *dst, const char *type,
                    unsigned long flags, const char *data)
{
	if (mount(src, dst, type, flags, data) < 0)
		return sk_error_errno(err, -errno, "mount %s on %s",
		                      type  ? type
		                      : src ? src
		                            : "(remount)",
		                      dst);
	return 0;
}

static int path_join(char *buf, size_t size, const char *a, const char *b)
{
	int n = snprintf(buf, size, "%s/%s", a, b);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* Make path a directory, or check that the image has one there. A symlink (or anything else)
 * where we mount is refused: mount follows symlinks, and the image is untrusted. Nothing else
 * runs in the sandbox yet, so what lstat sees stays true. */
static int ensure_dir(const char *path, mode_t mode)
{
	if (mkdir(path, mode) == 0)
		return chmod(path, mode) < 0 ? -errno : 0;
	if (errno != EEXIST)
		return -errno;
	struct stat st;
	if (lstat(path, &st) < 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

static int setup_dev(const char *root, struct sk_error *err)
{
	char dev[4096], p[4096];
	int r;
	if ((r = path_join(dev, sizeof(dev), root, "dev")) < 0 || (r = ensure_dir(dev, 0755)) < 0)
		return sk_error_errno(err, r, "the image's /dev");
	if ((r = mount_at(err, "tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME,
	                  "mode=755,size=64k,nr_inodes=64")) < 0)
		return r;
	for (size_t i = 0; i < ARRAY_SIZE(DEV_NODES); i++) {
		char host[64];
		snprintf(host, sizeof(host), "/dev/%s", DEV_NODES[i]);
		path_join(p, sizeof(p), dev, DEV_NODES[i]);
		int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
		if (fd < 0)
			return sk_error_errno(err, -errno, "create %s", p);
		close(fd);
		if ((r = mount_at(err, host, p, NULL, MS_BIND, NULL)) < 0)
			return r;
	}
	static const struct {
		const char *name, *target;
	} links[] = {{"ptmx", "pts/ptmx"},
	             {"fd", "/proc/self/fd"},
	             {"stdin", "/proc/self/fd/0"},
	             {"stdout", "/proc/self/fd/1"},
	             {"stderr", "/proc/self/fd/2"}};
	for (size_t i = 0; i < ARRAY_SIZE(links); i++) {
		path_join(p, sizeof(p), dev, links[i].name);
		if (symlink(links[i].target, p) < 0)
			return sk_error_errno(err, -errno, "symlink %s", p);
	}
	path_join(p, sizeof(p), dev, "pts");
	if (mkdir(p, 0755) < 0)
		return sk_error_errno(err, -errno, "mkdir %s", p);
	if ((r = mount_at(err, "devpts", p, "devpts", MS_NOSUID | MS_NOEXEC,
	                  "newinstance,ptmxmode=0666,mode=0620,gid=5")) < 0)
		return r;
	path_join(p, sizeof(p), dev, "shm");
	if (mkdir(p, 01777) < 0)
		return sk_error_errno(err, -errno, "mkdir %s", p);
	return mount_at(err, "shm", p, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
}

static int setup_proc(const char *root, struct sk_error *err)
{
	char proc[4096], p[4096], devnull[4096];
	int r;
	if ((r = path_join(proc, sizeof(proc), root, "proc")) < 0 ||
	    (r = ensure_dir(proc, 0755)) < 0)
		return sk_error_errno(err, r, "the image's /proc");
	if ((r = mount_at(err, "proc", proc, "proc", PROC_FLAGS, NULL)) < 0)
		return r;
	path_join(devnull, sizeof(devnull), root, "dev/null");
	for (size_t i = 0; i < ARRAY_SIZE(PROC_MASKED_FILES); i++) {
		path_join(p, sizeof(p), proc, PROC_MASKED_FILES[i]);
		if (access(p, F_OK) < 0)
			continue;
		if ((r = mount_at(err, devnull, p, NULL, MS_BIND, NULL)) < 0)
			return r;
	}
	for (size_t i = 0; i < ARRAY_SIZE(PROC_MASKED_DIRS); i++) {
		path_join(p, sizeof(p), proc, PROC_MASKED_DIRS[i]);
		if (access(p, F_OK) < 0)
			continue;
		if ((r = mount_at(err, "tmpfs", p, "tmpfs", MS_RDONLY | PROC_FLAGS, "size=0")) < 0)
			return r;
	}
	for (size_t i = 0; i < ARRAY_SIZE(PROC_READONLY); i++) {
		path_join(p, sizeof(p), proc, PROC_READONLY[i]);
		if (access(p, F_OK) < 0)
			continue;
		if ((r = mount_at(err, p, p, NULL, MS_BIND | MS_REC, NULL)) < 0)
			return r;
		if ((r = mount_at(err, NULL, p, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | PROC_FLAGS,
		                  NULL)) < 0)
			return r;
	}
	return 0;
}

static int setup_sys(const char *root, struct sk_error *err)
{
	char sys[4096];
	int r;
	if ((r = path_join(sys, sizeof(sys), root, "sys")) < 0 || (r = ensure_dir(sys, 0755)) < 0)
		return sk_error_errno(err, r, "the image's /sys");
	/* sysfs needs a network namespace owned by our user namespace (it is); where a host's
	 * mounts make the kernel refuse it, /sys stays an empty directory. */
	if (mount("sysfs", sys, "sysfs", MS_RDONLY | PROC_FLAGS, NULL) < 0 && errno != EPERM)
		return sk_error_errno(err, -errno, "mount sysfs on %s", sys);
	return 0;
}

int rootfs_setup(const char *scratch, int lower_fd, int upper_fd, int upper_volatile,
                 struct timing *t, struct sk_error *err)
{
	char upper[4096], work[4096], lower[4096], root[4096], opts[4096 * 3 + 64];
	int r;
	/* Nothing we mount may propagate back to the host. */
	if ((r = mount_at(err, NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) < 0)
		return r;
	timing_mark(t, "mount_private");
	/* The runtime made the layer, on btrfs or tmpfs, and keeps a handle on it. */
	if (move_mount(upper_fd, "", AT_FDCWD, scratch, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return sk_error_errno(err, -errno, "mount the writable layer on %s", scratch);
	path_join(upper, sizeof(upper), scratch, "upper");
	path_join(work, sizeof(work), scratch, "work");
	path_join(lower, sizeof(lower), scratch, "lower");
	path_join(root, sizeof(root), scratch, "root");
	if (mkdir(upper, 0755) < 0 || mkdir(work, 0700) < 0 || mkdir(lower, 0755) < 0 ||
	    mkdir(root, 0755) < 0)
		return sk_error_errno(err, -errno, "make layer directories in %s", scratch);
	if (move_mount(lower_fd, "", AT_FDCWD, lower, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return sk_error_errno(err, -errno, "move the image mount to %s", lower);
	/* On btrfs, volatile: overlayfs would otherwise sync the whole upper filesystem, every
	 * sandbox's layer on it, when this one is unmounted (init's exit) or fsyncs or syncs; the
	 * layer dies with the sandbox anyway, as a tmpfs one does. */
	snprintf(opts, sizeof(opts), "lowerdir=%s,upperdir=%s,workdir=%s,userxattr%s", lower, upper,
	         work, upper_volatile ? ",volatile" : "");
	if ((r = mount_at(err, "overlay", root, "overlay", MS_NOSUID, opts)) < 0)
		return r;
	timing_mark(t, "mount_tmpfs_overlay");
	if ((r = setup_dev(root, err)) < 0)
		return r;
	timing_mark(t, "mount_dev");
	if ((r = setup_proc(root, err)) < 0)
		return r;
	timing_mark(t, "mount_proc");
	if ((r = setup_sys(root, err)) < 0)
		return r;
	timing_mark(t, "mount_sys");
	char tmp[4096];
	path_join(tmp, sizeof(tmp), root, "tmp");
	if ((r = ensure_dir(tmp, 01777)) < 0)
		return sk_error_errno(err, r, "the image's /tmp");

	if (chdir(root) < 0)
		return sk_error_errno(err, -errno, "chdir %s", root);
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		return sk_error_errno(err, -errno, "pivot_root");
	/* The old root now sits under the new one: detach it and everything below. */
	if (umount2(".", MNT_DETACH) < 0)
		return sk_error_errno(err, -errno, "detach the old root");
	if (chdir("/") < 0)
		return sk_error_errno(err, -errno, "chdir /");
	timing_mark(t, "pivot_root");
	return 0;
}
