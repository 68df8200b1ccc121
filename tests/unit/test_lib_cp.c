/* The small libraries of the control plane: the string map, base64 and UTF-8, RFC 3339 time,
 * the JSON depth check, SHA-256 and random secrets. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/lib/clock.h"
#include "../../src/lib/encoding.h"
#include "../../src/lib/hash.h"
#include "../../src/lib/jsonlim.h"
#include "../../src/lib/map.h"

static void test_map_put_get_remove(void **state)
{
	(void)state;
	struct map m;
	map_init(&m);
	enum { N = 5000 };
	static char keys[N][16];
	for (int i = 0; i < N; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%d", i);
		assert_int_equal(map_put(&m, keys[i], (void *)(intptr_t)(i + 1)), 0);
	}
	assert_int_equal(m.len, N);
	for (int i = 0; i < N; i++)
		assert_int_equal((intptr_t)map_get(&m, keys[i]), i + 1);
	assert_null(map_get(&m, "absent"));
	/* replace keeps the count */
	assert_int_equal(map_put(&m, keys[7], (void *)(intptr_t)99), 0);
	assert_int_equal(m.len, N);
	assert_int_equal((intptr_t)map_get(&m, "k7"), 99);
	/* remove every other one; the rest stay reachable past the tombstones */
	for (int i = 0; i < N; i += 2)
		assert_non_null(map_remove(&m, keys[i]));
	assert_null(map_remove(&m, keys[0]));
	assert_int_equal(m.len, N / 2);
	for (int i = 0; i < N; i++)
		if (i % 2)
			assert_non_null(map_get(&m, keys[i]));
		else
			assert_null(map_get(&m, keys[i]));
	/* iteration sees each live value once */
	size_t pos = 0, seen = 0;
	while (map_next(&m, &pos))
		seen++;
	assert_int_equal(seen, N / 2);
	/* churn: many inserts and removes must not fill the table with tombstones */
	for (int round = 0; round < 20; round++) {
		for (int i = 0; i < N; i += 2)
			assert_int_equal(map_put(&m, keys[i], keys[i]), 0);
		for (int i = 0; i < N; i += 2)
			assert_ptr_equal(map_remove(&m, keys[i]), keys[i]);
	}
	assert_true(m.cap <= 4 * 16384);
	map_release(&m);
}

static void test_base64_round_trip(void **state)
{
	(void)state;
	static const struct {
		const char *in, *out;
	} V[] = {{"", ""},
	         {"f", "Zg=="},
	         {"fo", "Zm8="},
	         {"foo", "Zm9v"},
	         {"foob", "Zm9vYg=="},
	         {"fooba", "Zm9vYmE="},
	         {"foobar", "Zm9vYmFy"}};
	for (size_t i = 0; i < sizeof(V) / sizeof(V[0]); i++) {
		char enc[64];
		unsigned char dec[64];
		base64_encode(V[i].in, strlen(V[i].in), enc);
		assert_string_equal(enc, V[i].out);
		long n = base64_decode(enc, strlen(enc), dec);
		assert_int_equal(n, strlen(V[i].in));
		assert_memory_equal(dec, V[i].in, (size_t)n);
	}
	unsigned char all[256], dec[256];
	char enc[400];
	for (int i = 0; i < 256; i++)
		all[i] = (unsigned char)i;
	base64_encode(all, 256, enc);
	assert_int_equal(base64_decode(enc, strlen(enc), dec), 256);
	assert_memory_equal(dec, all, 256);
	unsigned char out[16];
	assert_int_equal(base64_decode("Zg=", 3, out), -EINVAL);
	assert_int_equal(base64_decode("Z===", 4, out), -EINVAL);
	assert_int_equal(base64_decode("Zm9v!A==", 8, out), -EINVAL);
	assert_int_equal(base64_decode("Zg==Zg==", 8, out), -EINVAL);
}

static void test_utf8_valid(void **state)
{
	(void)state;
	assert_true(utf8_valid((const unsigned char *)"plain ascii\n", 12));
	assert_true(
	    utf8_valid((const unsigned char *)"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15));
	assert_false(utf8_valid((const unsigned char *)"\xff\xfe", 2));
	assert_false(utf8_valid((const unsigned char *)"\xc0\xaf", 2));         /* overlong */
	assert_false(utf8_valid((const unsigned char *)"\xed\xa0\x80", 3));     /* surrogate */
	assert_false(utf8_valid((const unsigned char *)"\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
	assert_false(utf8_valid((const unsigned char *)"\xe2\x82", 2));         /* cut short */
	assert_false(utf8_valid((const unsigned char *)"a\0b", 3));
}

static void test_utf8_sanitize(void **state)
{
	(void)state;
	char ok[] = "h\xc3\xa9llo \xe2\x82\xac";
	assert_int_equal(utf8_sanitize(ok), 0);
	assert_string_equal(ok, "h\xc3\xa9llo \xe2\x82\xac");
	char latin1[] = "caf\xe9.txt";
	assert_int_equal(utf8_sanitize(latin1), 1);
	assert_string_equal(latin1, "caf?.txt");
	char cut[] = "a\xe2\x82"; /* a message truncated inside a character */
	assert_int_equal(utf8_sanitize(cut), 2);
	assert_string_equal(cut, "a??");
	char surrogate[] = "\xed\xa0\x80x";
	assert_int_equal(utf8_sanitize(surrogate), 3);
	assert_true(utf8_valid((const unsigned char *)surrogate, strlen(surrogate)));
}

static void test_rfc3339(void **state)
{
	(void)state;
	int64_t ms;
	char buf[RFC3339_BYTES];
	assert_int_equal(clock_parse_rfc3339("2026-11-26T23:22:29Z", &ms), 0);
	assert_int_equal(ms, 1795735349000LL);
	clock_format_rfc3339(ms + 123, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-26T23:22:29.123Z");
	assert_int_equal(clock_parse_rfc3339(buf, &ms), 0);
	assert_int_equal(ms, 1795735349123LL);
	assert_int_equal(clock_parse_rfc3339("2026-11-27T01:22:29+02:00", &ms), 0);
	assert_int_equal(ms, 1795735349000LL);
	assert_int_equal(clock_parse_rfc3339("2026-11-26t23:22:29.5z", &ms), 0);
	assert_int_equal(ms, 1795735349500LL);
	const char *bad[] = {"",
	                     "tomorrow",
	                     "2026-11-26",
	                     "2026-11-26T23:22:29",
	                     "2026-13-01T00:00:00Z",
	                     "2026-11-26T24:00:00Z",
	                     "2026-11-26T23:22:29.Z",
	                     "2026-11-26T23:22:29Zjunk",
	                     "2026-11-26T23:22:29+2:00"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(clock_parse_rfc3339(bad[i], &ms), -EINVAL);
}

static void test_json_depth(void **state)
{
	(void)state;
	char deep[200];
	memset(deep, '[', 100);
	memset(deep + 100, ']', 100);
	assert_false(json_depth_within(deep, sizeof(deep), 32));
	assert_true(json_depth_within(deep + 68, 64, 32));
	assert_false(json_depth_within(deep + 67, 66, 32));
	/* brackets inside strings don't count, escaped quotes don't end them */
	const char *s = "{\"a\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\"[[[[[[[[\"}";
	assert_true(json_depth_within(s, strlen(s), 2));
	assert_false(json_depth_within("{\"a\":{\"b\":{}}}", 14, 2));
}

static void test_sha256_and_random(void **state)
{
	(void)state;
	char hex[SHA256_HEX_BYTES];
	assert_int_equal(sha256_hex("abc", 3, hex), 0);
	assert_string_equal(hex,
	                    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	char a[65], b[65];
	assert_int_equal(random_hex(32, a, sizeof(a)), 0);
	assert_int_equal(random_hex(32, b, sizeof(b)), 0);
	assert_int_equal(strlen(a), 64);
	assert_string_not_equal(a, b);
	assert_int_equal(random_hex(32, a, 64), -ENOBUFS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_map_put_get_remove),
	    cmocka_unit_test(test_base64_round_trip),
	    cmocka_unit_test(test_utf8_valid),
	    cmocka_unit_test(test_utf8_sanitize),
	    cmocka_unit_test(test_rfc3339),
	    cmocka_unit_test(test_json_depth),
	    cmocka_unit_test(test_sha256_and_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
