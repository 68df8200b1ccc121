/* File helpers for small control files (cgroups, /proc) and fd-relative tree removal. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Write len bytes of data to dirfd/path (O_WRONLY, no create, no truncate); -errno on failure. */
int fs_write_at(int dirfd, const char *path, const char *data, size_t len);
/* Write a NUL-terminated string. */
int fs_write_str_at(int dirfd, const char *path, const char *s);
/* Read at most size-1 bytes of dirfd/path into buf, NUL-terminated; returns bytes read or -errno.
 */
ssize_t fs_read_at(int dirfd, const char *path, char *buf, size_t size);
/* Read a file holding one unsigned integer (or "max", returned as UINT64_MAX). */
int fs_read_u64_at(int dirfd, const char *path, unsigned long long *ret);
/* mkdir -p with mode for the directories it makes. */
int fs_mkdir_p(const char *path, mode_t mode);
/* Remove dirfd/name and everything below it without following symlinks, staying on one
 * filesystem-independent path of fds (names are never re-resolved through a symlink). */
int fs_rm_rf_at(int dirfd, const char *name);
/* In text of "key value" lines (cgroup stat files), the value of key; 0 when absent. */
unsigned long long fs_keyed_u64(const char *text, const char *key);
/* Close every fd from 3 up except the n in keep. */
int fs_close_all_except(const int *keep, size_t n);
/* A process's start time (clock ticks since boot, field 22 of /proc/PID/stat): with the pid, what
 * tells a process from a later one that reused its pid. */
int proc_stat_start_time(const char *stat, unsigned long long *ret);
int proc_start_time(pid_t pid, unsigned long long *ret);
/* A pidfd for the process pid if it is still the one that started at start (not a later one with
 * its pid) and has not exited (a zombie counts as gone); else -ESRCH (or -errno). */
int proc_pidfd_open(pid_t pid, unsigned long long start);
