/* A test tool for the image store: make images and read manifests without a server.
 *   skiff-image-tool ingest STORE DIR        ingest DIR as an image; prints its manifest digest
 *   skiff-image-tool show STORE DIGEST       print a stored manifest (an image's or a layer's)
 *   skiff-image-tool tree STORE DIGEST       materialize an image; prints its tree's path */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/image/manifest.h"
#include "../../src/lib/fsutil.h"

static int usage(void)
{
	fprintf(stderr, "usage: skiff-image-tool ingest|show|tree STORE DIR|DIGEST\n");
	return 2;
}

static int ingest(struct img_store *s, const char *dir, struct sk_error *err)
{
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return sk_error_errno(err, -errno, "open %s", dir);
	struct img_manifest m;
	img_manifest_init(&m);
	char digest[IMG_DIGEST_HEX];
	int r = img_ingest_dir(s, fd, 0, &img_default_limits, &m, err);
	if (r == 0)
		r = img_manifest_save(s, &m, digest, err);
	img_manifest_free(&m);
	if (r == 0)
		printf("%s\n", digest);
	return r;
}

static int show(struct img_store *s, const char *digest, struct sk_error *err)
{
	char *text;
	size_t len;
	/* A blob that is a manifest, image or layer: printed as stored (canonical JSON). */
	int r = img_blob_read(s, digest, 64 * 1024 * 1024, &text, &len, err);
	if (r == 0) {
		fwrite(text, 1, len, stdout);
		printf("\n");
		free(text);
	}
	return r;
}

int main(int argc, char **argv)
{
	if (argc != 4)
		return usage();
	struct img_store s;
	struct sk_error err = {0};
	if (img_store_open(&s, argv[2], &err) < 0) {
		fprintf(stderr, "skiff-image-tool: %s\n", err.msg);
		return 1;
	}
	int r;
	char path[4096];
	if (!strcmp(argv[1], "ingest"))
		r = ingest(&s, argv[3], &err);
	else if (!strcmp(argv[1], "show"))
		r = show(&s, argv[3], &err);
	else if (!strcmp(argv[1], "tree")) {
		r = img_materialize(&s, argv[3], path, sizeof(path), &err);
		if (r == 0)
			printf("%s\n", path);
	} else {
		img_store_close(&s);
		return usage();
	}
	img_store_close(&s);
	if (r < 0)
		fprintf(stderr, "skiff-image-tool: %s\n", err.msg);
	return r < 0 ? 1 : 0;
}
