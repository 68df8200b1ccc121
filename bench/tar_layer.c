/* Read one tar as a layer into a content store (img_layer_from_tar), as an import does: the
 * time bench/tar_layer.sh sets beside `tar -x` of the same archive.
 * Usage: tar_layer STORE_DIR ARCHIVE [whiteouts]   prints members, bytes and seconds. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../src/image/archive.h"

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s STORE_DIR ARCHIVE [whiteouts]\n", argv[0]);
		return 2;
	}
	struct sk_error err = {0};
	struct img_store s;
	if (img_store_open(&s, argv[1], &err) < 0) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		perror(argv[2]);
		return 1;
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct img_manifest m;
	struct img_tar_stats st;
	int flags = argc > 3 && strcmp(argv[3], "whiteouts") == 0 ? IMG_TAR_WHITEOUTS : 0;
	int r = img_layer_from_tar_stats(&s, fd, "/", flags, NULL, &m, &st, &err);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (r < 0) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	printf("members=%" PRIu64 " entries=%zu bytes=%" PRIu64 " seconds=%.3f\n", st.members, m.n,
	       st.bytes, (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	img_manifest_free(&m);
	img_store_close(&s);
	close(fd);
	return 0;
}
