/* libFuzzer target for the archive importers: each input is read as a tar layer (the first byte
 * picks whiteouts on or off) or as an OCI image archive, into a store under /tmp with small
 * limits. Whatever the bytes, the call returns (0 or an error), and ASan/UBSan see no fault;
 * a result survives canonical JSON (encode, then decode and check), an error's message is valid
 * UTF-8 and leaves the manifest empty, and either way nothing is left in the store's tmp/.
 * Build and run: `make fuzz`, then `tests/fuzz/run.sh [seconds]`. */
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../src/image/archive.h"
#include "../../src/lib/encoding.h"

static struct img_store store;
static char tmp_dir[4200];
static const struct img_limits limits = {
    .max_files = 1000,
    .max_bytes = 1 << 20,
    .max_file_bytes = 256 << 10,
    .max_xattr_bytes = 64 << 10,
    .max_meta_bytes = 1 << 20,
};

static void store_setup(void)
{
	/* run.sh names a directory it removes afterwards */
	static char tmpl[] = "/tmp/skiff-fuzz-archive-XXXXXX";
	const char *dir = getenv("SKIFF_FUZZ_STORE");
	if (!dir)
		dir = mkdtemp(tmpl);
	struct sk_error err = {0};
	if (!dir || img_store_open(&store, dir, &err) < 0) {
		fprintf(stderr, "fuzz store: %s\n", err.msg);
		abort();
	}
	snprintf(tmp_dir, sizeof(tmp_dir), "%s/tmp", dir);
}

/* The oracle: a result round trips through canonical JSON, an error is clean. */
static void check(int r, struct img_manifest *m, int layer, const struct sk_error *err)
{
	if (r < 0) {
		if (m->n || !utf8_valid((const unsigned char *)err->msg, strlen(err->msg))) {
			fprintf(stderr, "bad error: %d entries left, message \"%s\"\n", (int)m->n,
			        err->msg);
			abort();
		}
		return;
	}
	char *json = NULL;
	size_t len = 0;
	struct img_manifest back;
	img_manifest_init(&back);
	struct sk_error e2 = {0};
	if (img_manifest_encode(m, &json, &len, &e2) < 0 ||
	    img_manifest_decode(json, len, layer, &limits, &back, &e2) < 0 || back.n != m->n) {
		fprintf(stderr, "result does not round trip: %s\n", e2.msg);
		abort();
	}
	free(json);
	img_manifest_free(&back);
}

/* Nothing left in tmp/: blobs being written and the spool are gone. */
static void check_tmp_empty(void)
{
	DIR *d = opendir(tmp_dir);
	if (!d)
		abort();
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			fprintf(stderr, "left in tmp/: %s\n", de->d_name);
			abort();
		}
	closedir(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned long runs;
	if (!runs++)
		store_setup();
	if (size < 1)
		return 0;
	int fd = memfd_create("fuzz", MFD_CLOEXEC);
	if (fd < 0 || write(fd, data + 1, size - 1) != (ssize_t)(size - 1) ||
	    lseek(fd, 0, SEEK_SET) != 0)
		abort();
	struct sk_error err = {0};
	if (data[0] & 1) {
		struct img_manifest m;
		struct img_config c = {0};
		img_manifest_init(&m);
		int r = img_oci_import(&store, fd, &limits, &m, &c, &err);
		check(r, &m, 0, &err);
		img_manifest_free(&m);
		img_config_free(&c);
	} else {
		struct img_manifest m;
		img_manifest_init(&m);
		int flags = data[0] & 2 ? IMG_TAR_WHITEOUTS : 0;
		int r = img_layer_from_tar(&store, fd, "/", flags, &limits, &m, &err);
		check(r, &m, 1, &err);
		img_manifest_free(&m);
	}
	close(fd);
	check_tmp_empty();
	/* what the runs stored would otherwise pile up */
	if (runs % 1000 == 0)
		img_store_gc(&store, NULL, 0, 0, NULL, &err);
	return 0;
}
