/* What decoding a large manifest costs, side by side in one run: the manifest's JSON parsed as
 * one tree (json_loadb of the whole text, as decoding did before it went entry by entry) and
 * img_manifest_decode, each in a fresh process (this program run again) that reads the text
 * from a file, so that its peak memory is its own; then decoding and encoding again (the bytes
 * must come back the same), as saving a manifest loaded and changed does.
 * The manifest is made here: N entries, a directory per 100 (/usr/share/doc/package-NNNNNN),
 * regular files with a digest, mode, size and mtime, as an image of a distribution holds them.
 * Usage: manifest_decode N   (manifest_decode tree|decode|encode FILE: one way, in a child)
 * Last line: manifest_decode entries=… text_mib=… tree_s=… tree_rss_mib=… decode_s=…
 * decode_rss_mib=… encode_s=… encode_rss_mib=… (s: the child's run, reading the file included; rss:
 * its peak, the text it read included) */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
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

static int manifest_make(size_t n, char **ret, size_t *ret_len)
{
	struct img_manifest m;
	img_manifest_init(&m);
	struct sk_error err = {0};
	char path[128];
	const char *dirs[] = {"/", "/usr", "/usr/share", "/usr/share/doc"};
	for (size_t i = 0; i < 4; i++) {
		struct img_entry d = {.path = (char *)dirs[i], .type = IMG_DIR, .mode = 0755};
		if (img_manifest_add(&m, &d, &err) < 0)
			return -1;
	}
	struct img_entry f = {
	    .path = path, .type = IMG_REG, .mode = 0644, .size = 1234, .mtime_sec = 1700000000};
	sha256_hex("x", 1, f.digest);
	for (size_t i = 0; m.n < n; i++) {
		struct img_entry d = {
		    .path = path, .type = IMG_DIR, .mode = 0755, .mtime_sec = 1700000000};
		snprintf(path, sizeof(path), "/usr/share/doc/package-%06zu", i / 100);
		if (i % 100 == 0 && img_manifest_add(&m, &d, &err) < 0)
			return -1;
		snprintf(path, sizeof(path), "/usr/share/doc/package-%06zu/file-%04zu.txt", i / 100,
		         i % 100);
		if (i % 100 != 0 && img_manifest_add(&m, &f, &err) < 0)
			return -1;
	}
	int r = img_manifest_sort(&m, &err);
	if (r == 0)
		r = img_manifest_encode(&m, ret, ret_len, &err);
	if (r < 0)
		fprintf(stderr, "manifest_decode: %s\n", err.msg);
	img_manifest_free(&m);
	return r;
}

/* This process's peak resident memory (VmHWM: its own since its exec, unlike getrusage's
 * ru_maxrss, which keeps the forking parent's across the exec), in MiB. */
static long peak_mib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kib = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib < 0 ? -1 : kib / 1024;
}

/* The child: FILE read whole, then decoded one way; prints its peak memory, exits 0 when the
 * decoding worked. */
static int child_main(const char *how, const char *file)
{
	FILE *f = fopen(file, "rb");
	if (!f || fseek(f, 0, SEEK_END) < 0)
		return 1;
	long len = ftell(f);
	char *text = malloc((size_t)len + 1);
	if (!text || fseek(f, 0, SEEK_SET) < 0 || fread(text, 1, (size_t)len, f) != (size_t)len)
		return 1;
	fclose(f);
	int ok;
	if (strcmp(how, "tree") == 0) {
		json_error_t jerr;
		ok = json_loadb(text, (size_t)len, JSON_REJECT_DUPLICATES, &jerr) != NULL;
	} else {
		struct img_manifest m;
		img_manifest_init(&m);
		struct sk_error err = {0};
		ok = img_manifest_decode(text, (size_t)len, 0, NULL, &m, &err) == 0;
		if (ok && strcmp(how, "encode") == 0) {
			char *out = NULL;
			size_t olen = 0;
			ok = img_manifest_encode(&m, &out, &olen, &err) == 0 &&
			     olen == (size_t)len && memcmp(out, text, olen) == 0;
		}
	}
	printf("%ld\n", peak_mib());
	return ok ? 0 : 1;
}

/* Run one way of decoding in a fresh process (this program again): its time and peak memory. */
static int measure(const char *how, const char *file, double *ret_s, long *ret_mib)
{
	char exe[4096], cmd[8300];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n < 0)
		return -1;
	exe[n] = '\0';
	snprintf(cmd, sizeof(cmd), "'%s' %s '%s'", exe, how, file);
	double t0 = now_s();
	FILE *p = popen(cmd, "r");
	if (!p)
		return -1;
	int got = fscanf(p, "%ld", ret_mib);
	int status = pclose(p);
	*ret_s = now_s() - t0;
	return got == 1 && status == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	if (argc == 3)
		return child_main(argv[1], argv[2]);
	if (argc != 2) {
		fprintf(stderr, "usage: manifest_decode N\n");
		return 2;
	}
	size_t n = strtoull(argv[1], NULL, 10);
	char *text = NULL;
	size_t len = 0;
	if (n < 5 || manifest_make(n, &text, &len) < 0)
		return 1;
	char file[] = "/var/tmp/skiff-manifest-XXXXXX";
	int fd = mkstemp(file);
	int ok = fd >= 0 && write(fd, text, len) == (ssize_t)len;
	if (fd >= 0)
		close(fd);
	free(text);
	double tree_s = 0, dec_s = 0, enc_s = 0;
	long tree_mib = 0, dec_mib = 0, enc_mib = 0;
	ok = ok && measure("tree", file, &tree_s, &tree_mib) == 0 &&
	     measure("decode", file, &dec_s, &dec_mib) == 0 &&
	     measure("encode", file, &enc_s, &enc_mib) == 0;
	unlink(file);
	if (!ok) {
		fprintf(stderr, "manifest_decode: a child failed\n");
		return 1;
	}
	printf("manifest_decode entries=%zu text_mib=%zu tree_s=%.2f tree_rss_mib=%ld "
	       "decode_s=%.2f decode_rss_mib=%ld encode_s=%.2f encode_rss_mib=%ld\n",
	       n, len >> 20, tree_s, tree_mib, dec_s, dec_mib, enc_s, enc_mib);
	return 0;
}
