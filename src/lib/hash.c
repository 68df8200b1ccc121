#include "hash.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <sys/random.h>

void hex_encode(const uint8_t *in, size_t n, char *out)
{
	static const char HEX[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = HEX[in[i] >> 4];
		out[2 * i + 1] = HEX[in[i] & 15];
	}
	out[2 * n] = '\0';
}

int sha256_hex(const void *data, size_t len, char out[SHA256_HEX_BYTES])
{
	uint8_t md[32];
	unsigned int mdlen = 0;
	if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != sizeof(md))
		return -EIO;
	hex_encode(md, sizeof(md), out);
	return 0;
}

int random_hex(size_t nbytes, char *out, size_t size)
{
	uint8_t buf[64];
	if (nbytes > sizeof(buf) || size < 2 * nbytes + 1)
		return -ENOBUFS;
	size_t got = 0;
	while (got < nbytes) {
		ssize_t r = getrandom(buf + got, nbytes - got, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)r;
	}
	hex_encode(buf, nbytes, out);
	return 0;
}
