/* Writable layers on btrfs: one subvolume per sandbox, limited by a qgroup, so that filling it
 * fails with EDQUOT and costs the sandbox no memory (a tmpfs layer is memory).
 *
 * The filesystem is the data directory's: <data>/disk. Where the data directory is not on btrfs,
 * <data>/disk.img (a sparse file the size of the filesystem under it, formatted by mkfs.btrfs
 * once) is mounted there through a loop device (LOOP_CONFIGURE, autoclear: it goes when the mount
 * goes). Every instance using the data directory shares that mount, each in <data>/disk/<instance>:
 * the mount is made by whoever needs it first and removed by whoever finds it unused and empty
 * (no runtime holds <data>/disk.lock, no instance directory is left under it). Everything per
 * sandbox is an ioctl: create, limit and destroy a subvolume, remove its qgroup. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/btrfs.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <linux/magic.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/fsutil.h"
#include "../lib/id.h"
#include "disk.h"
#include "internal.h"

/* Simple quotas (Linux 6.7): usage is charged to the subvolume that allocated an extent, at
 * allocation, with no backref walks at each commit. The headers of older distributions lack it. */
#ifndef BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA
#define BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA 4
#endif
#define BTRFS_FIRST_SUBVOL_INO 256ull
/* The image is sparse: its blocks are the host filesystem's free space, taken as sandboxes write.
 * It is made no larger than what is free there, less a share left to the host (a tenth of the
 * filesystem): a btrfs larger than the space under it fails writes mid-transaction once that
 * space runs out, and goes read-only for every sandbox, and sandboxes would fill the host's disk
 * first. Below the minimum there is no room for it: writable layers fall back to tmpfs. */
#define DISK_IMAGE_MIN_BYTES   (256ull << 20)
#define DISK_IMAGE_HOST_SHARE  10
#define DISK_LOOP_TRIES        16
#define DISK_LOCK_TRIES        500
#define DISK_MOUNT_TRIES       4
#define DISK_LOOP_GONE_WAIT_MS 2000
#define DISK_LOCK_RETRY_US     10000
#define DISK_MKFS_OUTPUT_BYTES 400
#define DISK_MOUNT_FLAGS       (MS_NOSUID | MS_NODEV | MS_NOATIME)
/* Freed blocks are punched out of the sparse image, so a removed sandbox's data leaves the host's
 * disk too. */
#define DISK_MOUNT_OPTS "discard=async"
/* The image store, on the disk where the data directory is not btrfs (rt_image_store_place). */
#define DISK_STORE_DIR "images"

static const char *const MKFS_PATHS[] = {"/usr/sbin/mkfs.btrfs", "/sbin/mkfs.btrfs",
                                         "/usr/bin/mkfs.btrfs", "/bin/mkfs.btrfs"};

int rt_disk_backend_parse(const char *s, enum rt_disk_backend *ret)
{
	static const char *const NAMES[] = {"auto", "btrfs", "tmpfs"};
	for (size_t i = 0; i < ARRAY_SIZE(NAMES); i++)
		if (!strcmp(s, NAMES[i])) {
			*ret = (enum rt_disk_backend)i;
			return 0;
		}
	return -EINVAL;
}

const char *rt_disk_backend_name(const struct rt *rt)
{
	return rt->disk.btrfs ? "btrfs" : "tmpfs";
}

static int is_btrfs(const char *path)
{
	struct statfs sf;
	return statfs(path, &sf) == 0 && sf.f_type == BTRFS_SUPER_MAGIC;
}

/* Whether the data directory's own filesystem holds the layers: btrfs with quotas on already
 * (its /sys/fs/btrfs/<fsid>/qgroups). One whose quotas are off gets an image like any other
 * filesystem: turning them on would change the host's filesystem for good (simple quotas are an
 * incompatible feature, which kernels before 6.7 refuse to mount; full qgroups slow the commits
 * of a filesystem with snapshots). */
static int host_btrfs(const char *path)
{
	if (!is_btrfs(path))
		return 0;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct btrfs_ioctl_fs_info_args fi = {0};
	if (fd < 0 || ioctl(fd, BTRFS_IOC_FS_INFO, &fi) < 0)
		return 0;
	char q[96];
	const unsigned char *u = fi.fsid;
	snprintf(
	    q, sizeof(q),
	    "/sys/fs/btrfs/%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x"
	    "/qgroups",
	    u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
	    u[14], u[15]);
	return access(q, F_OK) == 0;
}

/* Whether dir is a mount of its own (another device than its parent's) holding btrfs. */
static int btrfs_mounted_at(const char *dir, const char *parent)
{
	struct stat a, b;
	return stat(dir, &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev && is_btrfs(dir);
}

/* Whether dir's filesystem is read-only: btrfs turns so after a failed write (the image's
 * blocks could not be had), and stays so until it is unmounted. */
static int read_only(const char *dir)
{
	struct statvfs vfs;
	return statvfs(dir, &vfs) == 0 && (vfs.f_flag & ST_RDONLY);
}

/* Run mkfs.btrfs on image. Its output comes back in the error when it fails. */
static int image_format(const char *image, struct sk_error *err)
{
	const char *mkfs = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(MKFS_PATHS) && !mkfs; i++)
		if (access(MKFS_PATHS[i], X_OK) == 0)
			mkfs = MKFS_PATHS[i];
	if (!mkfs)
		return sk_error_set(err, -ENOENT, "mkfs.btrfs not found (install btrfs-progs)");
	_cleanup_close_ int out = memfd_create("skiff-mkfs", MFD_CLOEXEC);
	if (out < 0)
		return sk_error_errno(err, -errno, "memfd_create");
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, out, 1);
	posix_spawn_file_actions_adddup2(&fa, out, 2);
	/* Metadata single, not DUP: the image is a file on a disk that has its own redundancy. */
	char *const argv[] = {(char *)mkfs, "-q", "-m",    "single",      "-d",
	                      "single",     "-L", "skiff", (char *)image, NULL};
	char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL};
	pid_t pid;
	int r = posix_spawn(&pid, mkfs, &fa, NULL, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0)
		return sk_error_errno(err, -r, "run %s", mkfs);
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return sk_error_errno(err, -errno, "wait for %s", mkfs);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	char msg[DISK_MKFS_OUTPUT_BYTES];
	ssize_t n = pread(out, msg, sizeof(msg) - 1, 0);
	msg[n > 0 ? n : 0] = '\0';
	msg[strcspn(msg, "\n")] = '\0';
	return sk_error_set(err, -EIO, "%s %s failed (status %d): %s", mkfs, image, status, msg);
}

/* Make <data>/disk.img once: a sparse file as large as the space free for it (its blocks are
 * taken only as sandboxes write), formatted under a temporary name and renamed when complete. */
static int image_ensure(const char *data_dir, const char *image, struct sk_error *err)
{
	struct stat st;
	if (stat(image, &st) == 0)
		return S_ISREG(st.st_mode) ? 0
		                           : sk_error_set(err, -EINVAL, "%s: not a file", image);
	if (errno != ENOENT)
		return sk_error_errno(err, -errno, "stat %s", image);
	struct statvfs vfs;
	if (statvfs(data_dir, &vfs) < 0)
		return sk_error_errno(err, -errno, "statvfs %s", data_dir);
	uint64_t total = (uint64_t)vfs.f_blocks * vfs.f_frsize;
	uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	uint64_t keep = total / DISK_IMAGE_HOST_SHARE;
	uint64_t size = avail > keep ? avail - keep : 0;
	if (size < DISK_IMAGE_MIN_BYTES)
		return sk_error_set(err, -ENOSPC,
		                    "%s: %llu MiB free, a disk image needs %llu MiB and leaves "
		                    "%llu MiB to the host",
		                    data_dir, (unsigned long long)(avail >> 20),
		                    (unsigned long long)(DISK_IMAGE_MIN_BYTES >> 20),
		                    (unsigned long long)(keep >> 20));
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.new", image);
	/* One a start killed mid-format left may still have its mkfs.btrfs writing to it: a new
	 * file, never that one. */
	if (unlink(tmp) < 0 && errno != ENOENT)
		return sk_error_errno(err, -errno, "remove %s", tmp);
	_cleanup_close_ int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return sk_error_errno(err, -errno, "create %s", tmp);
	/* On a btrfs data directory without quotas: no copy-on-write under the image's own. */
	int flags = FS_NOCOW_FL;
	if (is_btrfs(data_dir))
		ioctl(fd, FS_IOC_SETFLAGS, &flags);
	int r;
	if (ftruncate(fd, (off_t)size) < 0)
		r = sk_error_errno(err, -errno, "size %s", tmp);
	else if ((r = image_format(tmp, err)) == 0 && rename(tmp, image) < 0)
		r = sk_error_errno(err, -errno, "rename %s", tmp);
	if (r < 0)
		unlink(tmp);
	return r;
}

/* Attach image to a free loop device that detaches itself once unused (autoclear); *ret_fd
 * gets it open, *ret_dev its path. Another process may take the device we were offered: retry. */
static int loop_attach(const char *image, int *ret_fd, char *ret_dev, size_t dev_size,
                       struct sk_error *err)
{
	_cleanup_close_ int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		return sk_error_errno(err, -errno, "open /dev/loop-control");
	_cleanup_close_ int img = open(image, O_RDWR | O_CLOEXEC);
	if (img < 0)
		return sk_error_errno(err, -errno, "open %s", image);
	for (int tries = 0; tries < DISK_LOOP_TRIES; tries++) {
		int n = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (n < 0)
			return sk_error_errno(err, -errno, "get a free loop device");
		snprintf(ret_dev, dev_size, "/dev/loop%d", n);
		_cleanup_close_ int fd = open(ret_dev, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			return sk_error_errno(err, -errno, "open %s", ret_dev);
		struct loop_config cfg = {.fd = (uint32_t)img};
		cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO;
		snprintf((char *)cfg.info.lo_file_name, sizeof(cfg.info.lo_file_name), "%s", image);
		if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0) {
			*ret_fd = TAKE_FD(fd);
			return 0;
		}
		if (errno != EBUSY)
			return sk_error_errno(err, -errno, "configure %s for %s", ret_dev, image);
	}
	return sk_error_set(err, -EBUSY, "no free loop device for %s", image);
}

/* A loop device that still backs image from an earlier mount, its filesystem not yet let go
 * (a dying mount namespace, or one that copied the mount privately, still holds it): open in
 * *ret_fd, which keeps it from being cleared, with its path in ret_dev. 0 when there is none. */
static int loop_find(const char *image, int *ret_fd, char *ret_dev, size_t dev_size)
{
	struct stat img;
	if (stat(image, &img) < 0)
		return 0;
	DIR *d = opendir("/sys/block");
	if (!d)
		return 0;
	struct dirent *de;
	int found = 0;
	while (!found && (de = readdir(d))) {
		unsigned n;
		char tail;
		if (sscanf(de->d_name, "loop%u%c", &n, &tail) != 1)
			continue;
		snprintf(ret_dev, dev_size, "/dev/loop%u", n);
		int fd = open(ret_dev, O_RDONLY | O_CLOEXEC);
		struct loop_info64 info;
		if (fd >= 0 && ioctl(fd, LOOP_GET_STATUS64, &info) == 0 &&
		    info.lo_device == img.st_dev && info.lo_inode == img.st_ino) {
			*ret_fd = fd;
			found = 1;
		} else if (fd >= 0) {
			close(fd);
		}
	}
	closedir(d);
	return found;
}

static int quota_enable(int fd, struct sk_error *err)
{
	struct btrfs_ioctl_quota_ctl_args q = {.cmd = BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA};
	if (ioctl(fd, BTRFS_IOC_QUOTA_CTL, &q) == 0)
		return 0;
	/* Before Linux 6.7: full qgroups. */
	q = (struct btrfs_ioctl_quota_ctl_args){.cmd = BTRFS_QUOTA_CTL_ENABLE};
	if (ioctl(fd, BTRFS_IOC_QUOTA_CTL, &q) < 0)
		return sk_error_errno(err, -errno, "enable btrfs quotas");
	return 0;
}

/* Mount image's btrfs on dir through a loop device. Shared: a mount namespace copied from ours
 * while it is mounted (a sandbox's, before it goes private; another program's) gets a peer or
 * slave of it, so our unmount reaches it there too and the device is not pinned by a copy nobody
 * will unmount. */
static int image_mount(const char *image, const char *dir, struct sk_error *err)
{
	char dev[64];
	/* The image's filesystem may still be alive on the device of an earlier mount: mount that
	 * one again, the same filesystem. A second device for the same image would be mounted as a
	 * second filesystem (btrfs gives a copy a temporary fsid) writing the same blocks, and
	 * would not see what the first has not written back yet. */
	_cleanup_close_ int held = -1;
	if (loop_find(image, &held, dev, sizeof(dev)) &&
	    mount(dev, dir, "btrfs", DISK_MOUNT_FLAGS, DISK_MOUNT_OPTS) == 0) {
		mount(NULL, dir, NULL, MS_SHARED, NULL);
		return 0;
	}
	/* A device another image just left may still answer with that image's blocks for a moment
	 * (EIO from btrfs): detach it and try another. */
	for (int tries = 0;; tries++) {
		_cleanup_close_ int loop = -1;
		int r = loop_attach(image, &loop, dev, sizeof(dev), err);
		if (r < 0)
			return r;
		/* Once mounted, closing our fd leaves the mount the device's only user. */
		if (mount(dev, dir, "btrfs", DISK_MOUNT_FLAGS, DISK_MOUNT_OPTS) == 0) {
			mount(NULL, dir, NULL, MS_SHARED, NULL);
			return 0;
		}
		r = -errno;
		ioctl(loop, LOOP_CLR_FD, 0);
		if (tries + 1 >= DISK_MOUNT_TRIES)
			return sk_error_errno(err, r, "mount %s (%s) on %s", image, dev, dir);
		usleep(DISK_LOCK_RETRY_US);
	}
}

/* With <data>/disk.lock held exclusively: make <data>/disk a btrfs with quotas, mounting the
 * image when the data directory's filesystem can't hold the layers itself and nothing is
 * mounted there yet. */
static int disk_mount(const char *data_dir, const char *dir, struct sk_error *err)
{
	int r;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return sk_error_errno(err, -errno, "mkdir %s", dir);
	int host = host_btrfs(data_dir);
	if (!host && !btrfs_mounted_at(dir, data_dir)) {
		char image[4096];
		snprintf(image, sizeof(image), "%s/disk.img", data_dir);
		if ((r = image_ensure(data_dir, image, err)) < 0)
			return r;
		if ((r = image_mount(image, dir, err)) < 0)
			return r;
	}
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return sk_error_errno(err, -errno, "open %s", dir);
	/* The layers hold files of sandbox uids: no host user but root walks in. */
	if (fchmod(fd, 0700) < 0)
		return sk_error_errno(err, -errno, "chmod %s", dir);
	return host ? 0 : quota_enable(fd, err);
}

static void unmount_if_idle(const char *dir, int lock_fd);

/* With <data>/disk.lock open in fd: take it shared with the disk <data>/disk (dir) there,
 * mounting it first (the lock exclusive) if make and it is not. 1: it is not there and make is
 * 0. */
static int disk_lock_mounted(const char *data_dir, const char *dir, int make, int fd,
                             struct sk_error *err)
{
	/* Shared while we use it (no one unmounts it under us); exclusive only to mount it, taken
	 * without waiting (runtimes hold it shared for their whole life), so we look again and
	 * retry when another runtime holds it. A failed conversion drops our shared lock: taken
	 * again. */
	for (int tries = 0; tries < DISK_LOCK_TRIES; tries++) {
		int r;
		if (flock(fd, LOCK_SH) < 0)
			return sk_error_errno(err, -errno, "lock %s.lock", dir);
		if (host_btrfs(data_dir) || btrfs_mounted_at(dir, data_dir))
			return 0;
		if (!make)
			return 1;
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			usleep(DISK_LOCK_RETRY_US + (getpid() % 8) * 1000);
			continue;
		}
		if (!host_btrfs(data_dir) && !btrfs_mounted_at(dir, data_dir) &&
		    (r = disk_mount(data_dir, dir, err)) < 0)
			return r;
	}
	return sk_error_set(err, -EAGAIN, "%s: could not lock it to mount it", dir);
}

/* Hold the disk <data>/disk (dir) until *ret_lock_fd is closed: its lock taken shared, so that no
 * one unmounts it under us, mounted first if make and it is not. *ret_lock_fd is -1 when it is
 * not there and make is 0. */
static int disk_hold(const char *data_dir, const char *dir, int make, int *ret_lock_fd,
                     struct sk_error *err)
{
	char lock[4096];
	int r;
	*ret_lock_fd = -1;
	if (snprintf(lock, sizeof(lock), "%s/disk.lock", data_dir) >= (int)sizeof(lock))
		return sk_error_set(err, -ENAMETOOLONG, "data directory path too long");
	if (make && (r = fs_mkdir_p(data_dir, 0700)) < 0)
		return sk_error_errno(err, r, "make %s", data_dir);
	_cleanup_close_ int fd =
	    open(lock, O_RDWR | O_CLOEXEC | O_NOFOLLOW | (make ? O_CREAT : 0), 0600);
	if (fd < 0)
		return errno == ENOENT && !make ? 0 : sk_error_errno(err, -errno, "open %s", lock);
	/* The disk is mounted on <data>/disk itself, never where a symlink there leads (mount(2)
	 * and the chmod after it would follow it: a mount over, or a mode on, any directory of
	 * the host). */
	struct stat st;
	if (lstat(dir, &st) == 0 && !S_ISDIR(st.st_mode))
		return sk_error_set(err, -ENOTDIR, "%s is not a directory%s", dir,
		                    S_ISLNK(st.st_mode) ? " (a symlink: the disk is mounted on a "
		                                          "directory of the data directory's own)"
		                                        : "");
	/* Nothing can be written to it (btrfs stops writing after a write error): unmounted when
	 * no one else holds it, and mounted again, writable; else said (RT_DISK_AUTO falls back to
	 * tmpfs), and whoever finds it unused unmounts it (disk_remove_if_idle). */
	for (int pass = 0;; pass++) {
		r = disk_lock_mounted(data_dir, dir, make, fd, err);
		if (r < 0)
			return r;
		if (r > 0)
			return 0;
		if (!make || !read_only(dir))
			break;
		if (pass > 0)
			return sk_error_set(
			    err, -EROFS,
			    "%s is read-only (btrfs stops writing after a write error: see "
			    "the kernel's log); it is unmounted once no sandbox uses it",
			    dir);
		unmount_if_idle(dir, fd);
	}
	/* A data directory on btrfs with quotas is used as it is. */
	if (make && !btrfs_mounted_at(dir, data_dir) && (r = disk_mount(data_dir, dir, err)) < 0)
		return r;
	*ret_lock_fd = TAKE_FD(fd);
	return 0;
}

/* The disk for this runtime: mounted if make, its instance directory open, its lock held shared
 * (so that no other runtime unmounts it under us). */
static int disk_open(struct rt *rt, const char *data_dir, int make, struct sk_error *err)
{
	struct rt_disk *d = &rt->disk;
	if (snprintf(d->dir, sizeof(d->dir), "%s/disk", data_dir) >= (int)sizeof(d->dir))
		return sk_error_set(err, -ENAMETOOLONG, "data directory path too long");
	_cleanup_close_ int fd = -1;
	int r = disk_hold(data_dir, d->dir, make, &fd, err);
	if (r < 0 || fd < 0)
		return r;
	char inst[sizeof(d->dir) + 8];
	snprintf(inst, sizeof(inst), "%s/%s", d->dir, rt->instance);
	if (make && mkdir(inst, 0700) < 0 && errno != EEXIST)
		return sk_error_errno(err, -errno, "mkdir %s", inst);
	d->inst_fd = open(inst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d->inst_fd < 0 && errno == ENOENT && !make) {
		/* The instance has nothing there; held all the same, so that gc may unmount it. */
		d->lock_fd = TAKE_FD(fd);
		return 0;
	}
	if (d->inst_fd < 0)
		return sk_error_errno(err, -errno, "open %s", inst);
	d->lock_fd = TAKE_FD(fd);
	d->btrfs = 1;
	return 0;
}

int rt_disk_setup(struct rt *rt, const char *data_dir, enum rt_disk_backend backend, int make,
                  struct sk_error *err)
{
	disk_release(&rt->disk);
	if (backend == RT_DISK_TMPFS)
		return 0;
	struct sk_error why = {0};
	int r = disk_open(rt, data_dir, make, &why);
	if (r == 0)
		return 0;
	disk_release(&rt->disk);
	if (backend == RT_DISK_BTRFS) {
		*err = why;
		return sk_error_prefix(err, "btrfs disk");
	}
	snprintf(rt->disk.why_tmpfs, sizeof(rt->disk.why_tmpfs), "%s", why.msg);
	return 0;
}

void disk_release(struct rt_disk *d)
{
	if (d->inst_fd >= 0)
		close(d->inst_fd);
	if (d->lock_fd >= 0)
		close(d->lock_fd);
	d->inst_fd = d->lock_fd = -1;
	d->btrfs = 0;
	d->why_tmpfs[0] = '\0';
}

int disk_subvol_limit(int fd, uint64_t limit_bytes, struct sk_error *err)
{
	/* qgroupid 0: the subvolume fd is in. */
	struct btrfs_ioctl_qgroup_limit_args a = {
	    .lim = {.flags = BTRFS_QGROUP_LIMIT_MAX_RFER, .max_rfer = limit_bytes}};
	if (ioctl(fd, BTRFS_IOC_QGROUP_LIMIT, &a) < 0)
		return sk_error_errno(err, -errno, "limit the writable layer to %llu bytes",
		                      (unsigned long long)limit_bytes);
	return 0;
}

int disk_subvol_make(const struct rt_disk *d, const char *id, uid_t owner, uint64_t limit_bytes,
                     int *ret_fd, struct sk_error *err)
{
	struct btrfs_ioctl_vol_args va = {0};
	snprintf(va.name, sizeof(va.name), "%s", id);
	if (ioctl(d->inst_fd, BTRFS_IOC_SUBVOL_CREATE, &va) < 0)
		return sk_error_errno(err, -errno, "create the subvolume of %s on %s", id, d->dir);
	_cleanup_close_ int fd = openat(d->inst_fd, id, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r;
	if (fd < 0)
		r = sk_error_errno(err, -errno, "open subvolume %s", id);
	/* The sandbox's root (in its user namespace) makes overlayfs' upper and work in it. */
	else if (fchown(fd, owner, owner) < 0)
		r = sk_error_errno(err, -errno, "chown subvolume %s", id);
	else
		r = disk_subvol_limit(fd, limit_bytes, err);
	if (r < 0) {
		disk_subvol_remove(d->inst_fd, id);
		return r;
	}
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int disk_upper_mount(int subvol_fd, int *ret_fd, struct sk_error *err)
{
	_cleanup_close_ int fd =
	    open_tree(subvol_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
	if (fd < 0)
		return sk_error_errno(err, -errno, "clone a mount of the writable layer");
	/* The disk's mount is shared; the sandbox's root must not be (pivot_root refuses). */
	struct mount_attr attr = {.propagation = MS_PRIVATE};
	if (mount_setattr(fd, "", AT_EMPTY_PATH, &attr, sizeof(attr)) < 0)
		return sk_error_errno(err, -errno, "make the writable layer's mount private");
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int disk_subvol_remove(int inst_fd, const char *id)
{
	struct btrfs_ioctl_ino_lookup_args look = {.objectid = BTRFS_FIRST_SUBVOL_INO};
	int fd = openat(inst_fd, id, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	int found = ioctl(fd, BTRFS_IOC_INO_LOOKUP, &look) == 0;
	close(fd);
	struct btrfs_ioctl_vol_args va = {0};
	snprintf(va.name, sizeof(va.name), "%s", id);
	if (ioctl(inst_fd, BTRFS_IOC_SNAP_DESTROY, &va) < 0)
		return -errno;
	/* Its qgroup: the kernel refuses while the cleaner still frees the subvolume's extents
	 * (EBUSY), and then drops an empty one of a deleted subvolume itself. */
	if (found) {
		struct btrfs_ioctl_qgroup_create_args q = {.create = 0, .qgroupid = look.treeid};
		ioctl(inst_fd, BTRFS_IOC_QGROUP_CREATE, &q);
	}
	return 0;
}

int disk_gc(const struct rt_disk *d, int (*alive)(const char *id, void *ud), void *ud)
{
	if (!d->btrfs)
		return 0;
	_cleanup_close_ int fd = openat(d->inst_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = fd < 0 ? NULL : fdopendir(fd);
	if (!dir)
		return fd < 0 ? -errno : -ENOMEM;
	TAKE_FD(fd);
	int removed = 0;
	struct dirent *de;
	while ((de = readdir(dir)))
		if (id_is_valid("sb-", de->d_name) && !alive(de->d_name, ud) &&
		    disk_subvol_remove(d->inst_fd, de->d_name) == 0)
			removed++;
	closedir(dir);
	return removed;
}

/* Whether the disk dir holds no instance's directory: nothing but the image store (no instance
 * is named so: instance ids have at most 4 characters), which is no reason to keep it mounted
 * once no one holds its lock. */
static int no_instance(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	struct dirent *de;
	int none = 1;
	while (none && (de = readdir(d)))
		none = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		       !strcmp(de->d_name, DISK_STORE_DIR);
	closedir(d);
	return none;
}

/* An autoclear loop device is detached by the kernel a moment after its last user went: wait
 * for it (bounded), so that whoever comes next (a test's leak check, a new mount) finds it
 * free. Only while it still holds our image: someone else may have it by then. */
static void loop_wait_gone(dev_t dev, const char *image)
{
	char path[96], backing[4096];
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/loop/backing_file", major(dev),
	         minor(dev));
	size_t len = strlen(image);
	for (int ms = 0; ms < DISK_LOOP_GONE_WAIT_MS; ms += 5) {
		ssize_t n = fs_read_at(AT_FDCWD, path, backing, sizeof(backing));
		if (n <= 0 || strncmp(backing, image, len) != 0 ||
		    (backing[len] != '\n' && backing[len] != ' ' && backing[len] != '\0'))
			return;
		usleep(5000);
	}
}

/* Unmount the disk dir (<data>/disk) held through lock_fd when no one else holds it and it is
 * idle. Only we may hold it shared: then no runtime and no image store uses the disk, and none
 * can start to until we let go. Idle: no instance has anything on it; or read-only, when
 * nothing can be removed from it (what is left there is gc'd after the next mount). Not busy:
 * the kernel agrees (umount2 without MNT_DETACH fails while anything uses it). Our own image
 * only (a mount of its own): a btrfs data directory used as it is is never unmounted. */
static void unmount_if_idle(const char *dir, int lock_fd)
{
	char parent[4096];
	snprintf(parent, sizeof(parent), "%s", dir);
	char *slash = strrchr(parent, '/');
	if (slash)
		*slash = '\0';
	struct stat st;
	char image[sizeof(parent) + 16], real[PATH_MAX];
	snprintf(image, sizeof(image), "%s/disk.img", parent);
	/* The name the loop device has for it (sysfs' backing_file): no symlink, absolute. */
	if (!realpath(image, real))
		snprintf(real, sizeof(real), "%s", image);
	if (flock(lock_fd, LOCK_EX | LOCK_NB) == 0 && (no_instance(dir) || read_only(dir)) &&
	    btrfs_mounted_at(dir, parent) && stat(dir, &st) == 0 &&
	    umount2(dir, UMOUNT_NOFOLLOW) == 0)
		loop_wait_gone(st.st_dev, real);
}

void disk_remove_if_idle(struct rt_disk *d, const char *instance)
{
	if (d->lock_fd < 0)
		return;
	char inst[sizeof(d->dir) + 8];
	snprintf(inst, sizeof(inst), "%s/%s", d->dir, instance);
	if (d->inst_fd >= 0)
		close(d->inst_fd);
	d->inst_fd = -1;
	rmdir(inst); /* not while subvolumes of ours are left */
	unmount_if_idle(d->dir, d->lock_fd);
	disk_release(d);
}

void disk_remove_if_idle_at(const struct rt *rt, const char *inst_disk)
{
	/* <data>/disk/<instance> → <data>. */
	char data[4096];
	if (snprintf(data, sizeof(data), "%s", inst_disk) >= (int)sizeof(data))
		return;
	for (int i = 0; i < 2; i++) {
		char *slash = strrchr(data, '/');
		if (!slash || slash == data)
			return;
		*slash = '\0';
	}
	char dir[sizeof(data) + 8];
	snprintf(dir, sizeof(dir), "%s/disk", data);
	if (!strcmp(dir, rt->disk.dir))
		return; /* ours: gc's business */
	struct rt *other = calloc(1, sizeof(*other));
	if (!other)
		return;
	snprintf(other->instance, sizeof(other->instance), "%s", rt->instance);
	other->disk.inst_fd = other->disk.lock_fd = -1;
	struct sk_error err = {0};
	if (disk_open(other, data, 0, &err) == 0 && other->disk.lock_fd >= 0)
		disk_remove_if_idle(&other->disk, other->instance);
	disk_release(&other->disk);
	free(other);
}

/* The store on the disk, <data>/images being the symlink to it: the disk held (mounted if it
 * is not) before anything under it is touched, so that the store is never made anew on the data
 * directory's filesystem under an unmounted <data>/disk. */
static int store_on_disk(const char *data_dir, const char *link, char *root, size_t size,
                         int *ret_lock_fd, char *note, size_t note_size, struct sk_error *err)
{
	char target[64], dir[4096];
	ssize_t n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return sk_error_errno(err, -errno, "readlink %s", link);
	target[n] = '\0';
	if (strcmp(target, "disk/" DISK_STORE_DIR))
		return sk_error_set(err, -EINVAL,
		                    "%s links to '%s': expected disk/" DISK_STORE_DIR
		                    " (the store on the btrfs disk)",
		                    link, target);
	snprintf(dir, sizeof(dir), "%s/disk", data_dir);
	if ((size_t)snprintf(root, size, "%s/" DISK_STORE_DIR, dir) >= size)
		return sk_error_set(err, -ENAMETOOLONG, "data directory path too long");
	_cleanup_close_ int lock = -1;
	int r = disk_hold(data_dir, dir, 1, &lock, err);
	if (r < 0)
		return sk_error_prefix(err, "the image store is on the btrfs disk (%s links there)",
		                       link);
	/* Missing from a disk made anew (its image removed, or lost): an empty store, and the
	 * images the server still lists are gone with their blobs (a sandbox on one is refused:
	 * not in the store). Said at warn: it is no normal start. */
	int anew = mkdir(root, 0700) == 0;
	if (!anew && errno != EEXIST) {
		r = sk_error_errno(err, -errno, "mkdir %s", root);
		unmount_if_idle(dir, lock); /* a disk mounted for nothing */
		return r;
	}
	if (anew)
		snprintf(note, note_size,
		         "image store on the btrfs disk (%s) made anew, empty: the disk was made "
		         "anew or the store removed, and images made before are gone",
		         root);
	else
		snprintf(note, note_size,
		         "image store on the btrfs disk (%s): a tree's files share their blobs' "
		         "extents",
		         root);
	*ret_lock_fd = TAKE_FD(lock);
	return anew;
}

/* The store on the data directory's own filesystem: <data>/images, a directory. 1: another
 * process made it the symlink to the disk's meanwhile (to be looked at again). */
static int store_on_data(const char *link, char *root, size_t size, struct sk_error *err)
{
	struct stat st;
	if (mkdir(link, 0700) < 0 && errno != EEXIST)
		return sk_error_errno(err, -errno, "mkdir %s", link);
	if (lstat(link, &st) < 0)
		return sk_error_errno(err, -errno, "stat %s", link);
	if (S_ISLNK(st.st_mode))
		return 1;
	if (!S_ISDIR(st.st_mode))
		return sk_error_set(err, -ENOTDIR, "%s: not a directory", link);
	if ((size_t)snprintf(root, size, "%s", link) >= size)
		return sk_error_set(err, -ENAMETOOLONG, "data directory path too long");
	return 0;
}

/* Where the store goes when <data>/images is not there yet: 0 with root set, 1 when the symlink
 * to the disk's was made (to be looked at again). */
static int store_make(const char *data_dir, const char *link, int on_disk, char *root, size_t size,
                      char *note, size_t note_size, struct sk_error *err)
{
	/* A btrfs data directory reflinks where it is. */
	if (is_btrfs(data_dir))
		return store_on_data(link, root, size, err);
	if (!on_disk) {
		snprintf(note, note_size,
		         "image store on the data directory's filesystem (%s; writable layers "
		         "are tmpfs): each file's bytes are stored twice, blob and tree inode",
		         link);
		return store_on_data(link, root, size, err);
	}
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s/disk", data_dir);
	struct sk_error why = {0};
	int r;
	_cleanup_close_ int lock = -1;
	if (disk_hold(data_dir, dir, 1, &lock, &why) < 0) {
		snprintf(note, note_size,
		         "image store on the data directory's filesystem (%s; no btrfs disk: "
		         "%s): each file's bytes are stored twice, blob and tree inode",
		         link, why.msg);
		return store_on_data(link, root, size, err);
	}
	char store[sizeof(dir) + 16];
	snprintf(store, sizeof(store), "%s/" DISK_STORE_DIR, dir);
	if (mkdir(store, 0700) < 0 && errno != EEXIST)
		r = sk_error_errno(err, -errno, "mkdir %s", store);
	else if (symlink("disk/" DISK_STORE_DIR, link) < 0 && errno != EEXIST)
		r = sk_error_errno(err, -errno, "symlink %s", link);
	else
		return 1;
	unmount_if_idle(dir, lock); /* a disk mounted for nothing */
	return r;
}

int rt_image_store_place(const char *data_dir, int on_disk, char *root, size_t size,
                         int *ret_lock_fd, char *note, size_t note_size, struct sk_error *err)
{
	char link[4096];
	*ret_lock_fd = -1;
	note[0] = '\0';
	if (snprintf(link, sizeof(link), "%s/" DISK_STORE_DIR, data_dir) >= (int)sizeof(link))
		return sk_error_set(err, -ENAMETOOLONG, "data directory path too long");
	int r = fs_mkdir_p(data_dir, 0700);
	if (r < 0)
		return sk_error_errno(err, r, "make %s", data_dir);
	/* A few times at most: a symlink made here or by another process is looked at again. */
	for (int tries = 0; tries < 3; tries++) {
		struct stat st;
		int there = lstat(link, &st) == 0;
		if (!there && errno != ENOENT)
			return sk_error_errno(err, -errno, "stat %s", link);
		if (there && S_ISLNK(st.st_mode))
			return store_on_disk(data_dir, link, root, size, ret_lock_fd, note,
			                     note_size, err);
		if (there && !S_ISDIR(st.st_mode))
			return sk_error_set(err, -ENOTDIR, "%s: not a directory", link);
		if (there) {
			/* Moving it would copy every blob and leave the trees running sandboxes use
			 * without their store: kept, and said. */
			if (!is_btrfs(data_dir))
				snprintf(
				    note, note_size,
				    "image store on the data directory's filesystem (%s), kept "
				    "where it was made (%s): each file's bytes are stored twice, "
				    "blob and tree inode",
				    link,
				    on_disk
				        ? "by an earlier version, or when there was no btrfs disk"
				        : "writable layers are tmpfs");
			r = store_on_data(link, root, size, err);
		} else {
			r = store_make(data_dir, link, on_disk, root, size, note, note_size, err);
		}
		if (r <= 0)
			return r;
		note[0] = '\0';
	}
	return sk_error_set(err, -EAGAIN, "%s: changed while it was looked at", link);
}

void rt_image_store_release(const char *data_dir, int lock_fd)
{
	if (lock_fd < 0)
		return;
	char dir[4096];
	if (snprintf(dir, sizeof(dir), "%s/disk", data_dir) < (int)sizeof(dir))
		unmount_if_idle(dir, lock_fd);
	close(lock_fd);
}
