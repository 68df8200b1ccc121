/* What decoding a large manifest costs, side by side in one run: the manifest's JSON parsed as
 * one tree (json_loadb of the whole text, as decoding did before it went entry by entry) and
 * img_manifest_decode, each in a fresh process (this program run again) that reads the text
 * from a file, so that its peak memory is its own.
 * The manifest is made here: N entries, a directory per 100 (/usr/share/doc/package-NNNNNN),
 * regular files with a digest, mode, size and mtime, as an image of a distribution holds them.
 * Usage: manifest_decode N   (manifest_decode tree|decode FILE: one way, in a child)
 * Last line: manifest_decode entries=… text_mib=… tree_s=… tree_rss_mib=… decode_s=…
 * decode_rss_mib=… (rss: the child's peak, the text it was handed included) */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
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

/* The child: FILE read whole, then decoded one way; exits 0 when that worked. */
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
	if (strcmp(how, "tree") == 0) {
		json_error_t jerr;
		return json_loadb(text, (size_t)len, JSON_REJECT_DUPLICATES, &jerr) ? 0 : 1;
	}
	struct img_manifest m;
	img_manifest_init(&m);
	struct sk_error err = {0};
	return img_manifest_decode(text, (size_t)len, 0, NULL, &m, &err) == 0 ? 0 : 1;
}

/* Run one way of decoding in a fresh process: its time and peak memory. */
static int measure(const char *how, const char *file, double *ret_s, long *ret_mib)
{
	double t0 = now_s();
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		execl("/proc/self/exe", "manifest_decode", how, file, (char *)NULL);
		_exit(127);
	}
	int status = 0;
	struct rusage ru;
	if (wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
		return -1;
	*ret_s = now_s() - t0;
	*ret_mib = ru.ru_maxrss / 1024;
	return 0;
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
	double tree_s = 0, dec_s = 0;
	long tree_mib = 0, dec_mib = 0;
	ok = ok && measure("tree", file, &tree_s, &tree_mib) == 0 &&
	     measure("decode", file, &dec_s, &dec_mib) == 0;
	unlink(file);
	if (!ok) {
		fprintf(stderr, "manifest_decode: a child failed\n");
		return 1;
	}
	printf("manifest_decode entries=%zu text_mib=%zu tree_s=%.2f tree_rss_mib=%ld "
	       "decode_s=%.2f decode_rss_mib=%ld\n",
	       n, len >> 20, tree_s, tree_mib, dec_s, dec_mib);
	return 0;
}
