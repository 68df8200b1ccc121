#include "id.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static const char CROCKFORD[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

int id_new(const char *prefix, char *buf, size_t size)
{
	size_t plen = strlen(prefix);
	if (plen > 12 || size < plen + ID_CHARS + 1)
		return -ENOBUFS;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t ms = (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	uint8_t bytes[16];
	for (int i = 0; i < 6; i++)
		bytes[i] = ms >> (8 * (5 - i));
	if (getrandom(bytes + 6, 10, 0) != 10)
		return -errno ? -errno : -EIO;
	/* 128 bits → 26 base32 chars: the first char carries the top 3 bits (130 = 26*5). */
	memcpy(buf, prefix, plen);
	for (int i = 0; i < ID_CHARS; i++) {
		int bit = i * 5 -
		          2; /* bit offset from the top of the 128 bits; negative → leading zeros */
		unsigned v = 0;
		for (int b = 0; b < 5; b++) {
			int pos = bit + b;
			v <<= 1;
			if (pos >= 0)
				v |= (bytes[pos / 8] >> (7 - pos % 8)) & 1;
		}
		buf[plen + i] = CROCKFORD[v];
	}
	buf[plen + ID_CHARS] = '\0';
	return 0;
}

int id_is_valid(const char *prefix, const char *s)
{
	size_t plen = strlen(prefix);
	if (strncmp(s, prefix, plen) != 0 || strlen(s) != plen + ID_CHARS)
		return 0;
	for (size_t i = plen; s[i]; i++)
		if (!strchr(CROCKFORD, s[i]))
			return 0;
	return 1;
}
