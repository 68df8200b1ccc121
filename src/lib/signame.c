#include "signame.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <strings.h>

#define NAMED_SIGNALS 31 /* 1-31 have names; the realtime ones are numbers here */

int signal_parse(const char *s, size_t len)
{
	char name[16];
	if (!s || len == 0 || len >= sizeof(name) || memchr(s, '\0', len))
		return -EINVAL;
	memcpy(name, s, len);
	name[len] = '\0';
	if (strspn(name, "0123456789") == len) {
		if (len > 2 || name[0] == '0')
			return -EINVAL;
		int n = (name[0] - '0') * (len == 2 ? 10 : 1) + (len == 2 ? name[1] - '0' : 0);
		return n >= 1 && n <= SIGNAME_MAX ? n : -EINVAL;
	}
	const char *bare = strncasecmp(name, "SIG", 3) ? name : name + 3;
	for (int sig = 1; sig <= NAMED_SIGNALS; sig++) {
		const char *abbrev = sigabbrev_np(sig);
		if (abbrev && !strcasecmp(bare, abbrev))
			return sig;
	}
	return -EINVAL;
}
