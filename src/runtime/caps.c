#include "caps.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../lib/fsutil.h"

uint64_t caps_default_mask(void)
{
	static const int caps[] = {
	    CAP_CHOWN,   CAP_DAC_OVERRIDE, CAP_FSETID,           CAP_FOWNER,
	    CAP_MKNOD,   CAP_NET_RAW,      CAP_SETGID,           CAP_SETUID,
	    CAP_SETFCAP, CAP_SETPCAP,      CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT,
	    CAP_KILL,    CAP_AUDIT_WRITE,
	};
	uint64_t m = 0;
	for (size_t i = 0; i < ARRAY_SIZE(caps); i++)
		m |= 1ULL << caps[i];
	return m;
}

int caps_last_cap(void)
{
	static int cached = -1;
	if (cached < 0) {
		unsigned long long v;
		cached =
		    fs_read_u64_at(AT_FDCWD, "/proc/sys/kernel/cap_last_cap", &v) == 0 && v < 64
		        ? (int)v
		        : CAP_LAST_CAP;
	}
	return cached;
}

int caps_bounding_restrict(uint64_t mask, struct sk_error *err)
{
	int last = caps_last_cap();
	for (int c = 0; c <= last; c++) {
		if (mask & (1ULL << c))
			continue;
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
			return sk_error_errno(err, -errno,
			                      "drop capability %d from the bounding set", c);
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return sk_error_errno(err, -errno, "clear ambient capabilities");
	return 0;
}

int caps_set(uint64_t mask, struct sk_error *err)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2] = {{0}};
	/* Inheritable stays empty, as Docker's (CVE-2022-24769): a full one would hand its
	 * capabilities to any program with inheritable file capabilities, whoever runs it. Root
	 * still gets the bounding set on exec. */
	for (int i = 0; i < 2; i++) {
		uint32_t m = (uint32_t)(mask >> (32 * i));
		data[i].effective = data[i].permitted = m;
		data[i].inheritable = 0;
	}
	if (syscall(SYS_capset, &hdr, data) < 0)
		return sk_error_errno(err, -errno, "set capabilities");
	return 0;
}

int caps_restrict(uint64_t mask, struct sk_error *err)
{
	if (caps_bounding_restrict(mask, err) < 0)
		return -1;
	return caps_set(mask, err);
}

int caps_clear(struct sk_error *err)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2] = {{0}};
	if (syscall(SYS_capset, &hdr, data) < 0)
		return sk_error_errno(err, -errno, "drop capabilities");
	return 0;
}
