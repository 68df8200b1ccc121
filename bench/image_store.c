/* The image store's costs through its own functions: ingest a directory (every file hashed and
 * stored once), then materialize its image cold (inodes made from the blobs: reflinks on btrfs,
 * copies elsewhere), warm (a second image of the same files: only hard links to the existing
 * inodes) and cached (the tree is already there).
 * Usage: image_store STORE SRC
 * Last line: image_store files=… bytes=… ingest_s=… cold_s=… warm_s=… cached_ms=… */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../src/image/manifest.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(const char *what, const struct sk_error *err)
{
	fprintf(stderr, "image_store: %s: %s\n", what, err->msg);
	return 1;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: image_store STORE SRC\n");
		return 2;
	}
	struct sk_error err = {0};
	struct img_store s;
	if (img_store_open(&s, argv[1], &err) < 0)
		return fail("open store", &err);
	int src = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (src < 0) {
		perror(argv[2]);
		return 1;
	}
	struct img_manifest m;
	img_manifest_init(&m);
	char d1[IMG_DIGEST_HEX], d2[IMG_DIGEST_HEX], path[4096];
	double t0 = now_s();
	if (img_ingest_dir(&s, src, 0, NULL, &m, &err) < 0 ||
	    img_manifest_save(&s, &m, d1, &err) < 0)
		return fail("ingest", &err);
	double t1 = now_s();
	if (img_materialize(&s, d1, path, sizeof(path), &err) < 0)
		return fail("materialize cold", &err);
	double t2 = now_s();
	/* Another image of the same files (its root's mtime differs): every inode is there. */
	m.e[0].mtime_sec++;
	if (img_manifest_save(&s, &m, d2, &err) < 0)
		return fail("save", &err);
	double t3 = now_s();
	if (img_materialize(&s, d2, path, sizeof(path), &err) < 0)
		return fail("materialize warm", &err);
	double t4 = now_s();
	if (img_materialize(&s, d2, path, sizeof(path), &err) < 0)
		return fail("materialize cached", &err);
	double t5 = now_s();
	uint64_t bytes = 0;
	for (size_t i = 0; i < m.n; i++)
		bytes += m.e[i].size;
	printf("image_store files=%zu bytes=%llu ingest_s=%.2f cold_s=%.2f warm_s=%.2f "
	       "cached_ms=%.3f\n",
	       m.n, (unsigned long long)bytes, t1 - t0, t2 - t1, t4 - t3, (t5 - t4) * 1e3);
	img_manifest_free(&m);
	close(src);
	img_store_close(&s);
	return 0;
}
