/* Unit tests for src/runtime/spec.c: defaults, the JSON create body, setters, validation, parsers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/runtime/spec.h"

#define EINPUT (-SK_EINVAL_SPEC)

/* ---- helpers ---- */

static int apply(struct spec *s, const char *json, struct sk_error *err)
{
	return spec_apply_json(s, json, strlen(json), err);
}

/* Apply json to a fresh spec: it must fail as bad input with a message starting with want. */
static void expect_error_len(const char *json, size_t len, const char *want)
{
	struct spec s;
	struct sk_error err = {0};
	spec_init(&s);
	int r = spec_apply_json(&s, json, len, &err);
	if (r != EINPUT || strncmp(err.msg, want, strlen(want)) != 0)
		print_error("body %.200s: r=%d msg '%s', want '%s...'\n", json, r, err.msg, want);
	assert_int_equal(r, EINPUT);
	assert_int_equal(err.code, EINPUT);
	assert_true(sk_error_is_input(&err));
	assert_memory_equal(err.msg, want, strlen(want));
	spec_release(&s);
}

static void expect_error(const char *json, const char *want)
{
	expect_error_len(json, strlen(json), want);
}

/* Apply json to a fresh spec: it must succeed, and the result must validate. */
static void expect_ok(const char *json)
{
	struct spec s;
	struct sk_error err = {0};
	spec_init(&s);
	int r = apply(&s, json, &err);
	if (r != 0)
		print_error("body %.200s: r=%d msg '%s'\n", json, r, err.msg);
	assert_int_equal(r, 0);
	assert_int_equal(spec_validate(&s, &err), 0);
	spec_release(&s);
}

/* A malloc'd JSON body: prefix, n copies of item separated by commas, suffix. */
static char *json_repeat(const char *prefix, const char *item_fmt, size_t n, const char *suffix)
{
	size_t cap = strlen(prefix) + strlen(suffix) + n * (strlen(item_fmt) + 24) + 1;
	char *buf = malloc(cap);
	assert_non_null(buf);
	size_t off = (size_t)snprintf(buf, cap, "%s", prefix);
	for (size_t i = 0; i < n; i++) {
		if (i)
			buf[off++] = ',';
		off += (size_t)snprintf(buf + off, cap - off, item_fmt, i);
	}
	off += (size_t)snprintf(buf + off, cap - off, "%s", suffix);
	assert_true(off < cap);
	return buf;
}

static char *chars_new(size_t n, char c)
{
	char *s = malloc(n + 1);
	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* ---- defaults and release ---- */

static void test_defaults(void **state)
{
	(void)state;
	struct spec s;
	memset(&s, 0xa5, sizeof(s));
	spec_init(&s);
	assert_null(s.image);
	assert_null(s.rootfs);
	assert_null(s.argv);
	assert_int_equal(s.argc, 0);
	assert_null(s.env);
	assert_int_equal(s.envc, 0);
	assert_null(s.workdir);
	assert_null(s.hostname);
	assert_null(s.name);
	assert_true(s.cpu == 1.0);
	assert_int_equal(s.memory_mib, 512);
	assert_int_equal(s.disk_mib, 1024);
	assert_int_equal(s.pids, 1024);
	assert_true(s.timeout_s == 300.0);
	assert_int_equal(s.network, SPEC_NET_NONE);
	struct sk_error err = {0};
	assert_int_equal(spec_validate(&s, &err), 0);
	/* An empty body changes nothing. */
	assert_int_equal(apply(&s, "{}", &err), 0);
	assert_true(s.cpu == SPEC_DEFAULT_CPU);
	assert_int_equal(s.memory_mib, SPEC_DEFAULT_MEMORY_MIB);
	spec_release(&s);
}

static void test_release(void **state)
{
	(void)state;
	struct spec s;
	/* A zeroed struct is accepted, and so is releasing twice. */
	memset(&s, 0, sizeof(s));
	spec_release(&s);
	spec_release(&s);
	assert_int_equal(s.memory_mib, SPEC_DEFAULT_MEMORY_MIB);

	struct sk_error err = {0};
	assert_int_equal(apply(&s,
	                       "{\"image\":\"i\",\"rootfs\":\"/r\",\"command\":[\"a\",\"b\"],"
	                       "\"env\":{\"A\":\"1\",\"B\":\"2\"},\"workdir\":\"/w\","
	                       "\"hostname\":\"h\",\"name\":\"n\",\"memory_mib\":64}",
	                       &err),
	                 0);
	assert_non_null(s.argv);
	/* Every owned pointer is freed (ASan reports leaks) and the defaults are back. */
	spec_release(&s);
	assert_null(s.image);
	assert_null(s.rootfs);
	assert_null(s.argv);
	assert_null(s.env);
	assert_null(s.workdir);
	assert_null(s.hostname);
	assert_null(s.name);
	assert_int_equal(s.argc, 0);
	assert_int_equal(s.envc, 0);
	assert_int_equal(s.memory_mib, SPEC_DEFAULT_MEMORY_MIB);
	spec_release(&s);
}

/* ---- the JSON body ---- */

static void test_json_every_field(void **state)
{
	(void)state;
	const char *body = "{\"image\":\"alpine:3\","
	                   "\"command\":[\"/bin/sh\",\"-c\",\"echo hi\"],"
	                   "\"env\":{\"A\":\"1\",\"B_2\":\"x=y\",\"_e\":\"\"},"
	                   "\"workdir\":\"/tmp/w\","
	                   "\"cpu\":0.5,"
	                   "\"memory_mib\":64,"
	                   "\"disk_mib\":100,"
	                   "\"pids\":50,"
	                   "\"timeout_s\":2.5,"
	                   "\"network\":\"none\","
	                   "\"name\":\"job-1\","
	                   "\"tags\":{\"team\":\"infra\",\"empty\":\"\"},"
	                   "\"hostname\":\"box.local\","
	                   "\"rootfs\":\"/srv/root\","
	                   "\"idle_timeout_s\":null,"
	                   "\"cidr_allowlist\":[],"
	                   "\"ports\":null}";
	struct spec s;
	struct sk_error err = {0};
	spec_init(&s);
	assert_int_equal(apply(&s, body, &err), 0);
	assert_string_equal(s.image, "alpine:3");
	assert_int_equal(s.argc, 3);
	assert_string_equal(s.argv[0], "/bin/sh");
	assert_string_equal(s.argv[1], "-c");
	assert_string_equal(s.argv[2], "echo hi");
	assert_null(s.argv[3]);
	assert_int_equal(s.envc, 3);
	assert_string_equal(s.env[0], "A=1");
	assert_string_equal(s.env[1], "B_2=x=y");
	assert_string_equal(s.env[2], "_e=");
	assert_null(s.env[3]);
	assert_string_equal(s.workdir, "/tmp/w");
	assert_true(s.cpu == 0.5);
	assert_int_equal(s.memory_mib, 64);
	assert_int_equal(s.disk_mib, 100);
	assert_int_equal(s.pids, 50);
	assert_true(s.timeout_s == 2.5);
	assert_int_equal(s.network, SPEC_NET_NONE);
	assert_string_equal(s.name, "job-1");
	assert_string_equal(s.hostname, "box.local");
	assert_string_equal(s.rootfs, "/srv/root");
	assert_int_equal(spec_validate(&s, &err), 0);

	/* A second body: command replaced, env merged (same name replaced), null clears a string.
	 */
	assert_int_equal(apply(&s,
	                       "{\"command\":[\"true\"],\"env\":{\"A\":\"2\",\"C\":\"3\"},"
	                       "\"image\":null,\"cpu\":2,\"timeout_s\":0,\"command\":null}",
	                       &err),
	                 EINPUT); /* duplicate "command" */
	assert_int_equal(apply(&s,
	                       "{\"command\":[\"true\"],\"env\":{\"A\":\"2\",\"C\":\"3\"},"
	                       "\"image\":null,\"cpu\":2,\"timeout_s\":0}",
	                       &err),
	                 0);
	assert_null(s.image);
	assert_int_equal(s.argc, 1);
	assert_string_equal(s.argv[0], "true");
	assert_null(s.argv[1]);
	assert_int_equal(s.envc, 4);
	assert_string_equal(s.env[0], "A=2");
	assert_string_equal(s.env[3], "C=3");
	assert_true(s.cpu == 2.0);
	assert_true(s.timeout_s == 0.0);
	/* null for command and env leaves them alone. */
	assert_int_equal(apply(&s, "{\"command\":null,\"env\":null,\"tags\":null}", &err), 0);
	assert_int_equal(s.argc, 1);
	assert_int_equal(s.envc, 4);
	spec_release(&s);
}

static void test_json_unknown_fields(void **state)
{
	(void)state;
	expect_error("{\"imagee\":\"x\"}", "unknown field \"imagee\"");
	expect_error("{\"Image\":\"x\"}", "unknown field \"Image\"");
	expect_error("{\"\":1}", "unknown field \"\"");
	expect_error("{\"image\":\"x\",\"extra\":{}}", "unknown field \"extra\"");
	/* Long names are cut in the message. */
	char *key = chars_new(300, 'k');
	char body[400];
	snprintf(body, sizeof(body), "{\"%s\":1}", key);
	struct spec s;
	struct sk_error err = {0};
	spec_init(&s);
	assert_int_equal(apply(&s, body, &err), EINPUT);
	assert_int_equal(strlen(err.msg), strlen("unknown field \"\"") + 64);
	spec_release(&s);
	free(key);
}

static void test_json_wrong_types(void **state)
{
	(void)state;
	expect_error("{\"image\":5}", "image: expected a string");
	expect_error("{\"image\":[\"a\"]}", "image: expected a string");
	expect_error("{\"rootfs\":true}", "rootfs: expected a string");
	expect_error("{\"workdir\":1.5}", "workdir: expected a string");
	expect_error("{\"hostname\":{}}", "hostname: expected a string");
	expect_error("{\"name\":false}", "name: expected a string");
	expect_error("{\"command\":\"ls -l\"}", "command: expected an array of strings");
	expect_error("{\"command\":{}}", "command: expected an array of strings");
	expect_error("{\"command\":[\"ls\",1]}", "command[1]: expected a string");
	expect_error("{\"command\":[null]}", "command[0]: expected a string");
	expect_error("{\"command\":[]}", "command: must not be empty");
	expect_error("{\"command\":[\"\",\"x\"]}", "command: the program name is empty");
	expect_error("{\"env\":[\"A=1\"]}", "env: expected an object of strings");
	expect_error("{\"env\":\"A=1\"}", "env: expected an object of strings");
	expect_error("{\"env\":{\"A\":1}}", "env.A: expected a string");
	expect_error("{\"env\":{\"A\":null}}", "env.A: expected a string");
	expect_error("{\"cpu\":\"1\"}", "cpu: expected a number");
	expect_error("{\"cpu\":null}", "cpu: expected a number");
	expect_error("{\"timeout_s\":\"5\"}", "timeout_s: expected a number");
	expect_error("{\"memory_mib\":\"64\"}", "memory_mib: expected a whole number");
	expect_error("{\"memory_mib\":64.5}", "memory_mib: expected a whole number");
	expect_error("{\"memory_mib\":64.0}", "memory_mib: expected a whole number");
	expect_error("{\"memory_mib\":1e3}", "memory_mib: expected a whole number");
	expect_error("{\"disk_mib\":[]}", "disk_mib: expected a whole number");
	expect_error("{\"pids\":true}", "pids: expected a whole number");
	expect_error("{\"network\":1}", "network: expected \"none\" or \"egress\"");
	expect_error("{\"network\":null}", "network: expected \"none\" or \"egress\"");
	expect_error("{\"network\":\"bridge\"}",
	             "network: expected \"none\" or \"egress\", got \"bridge\"");
	expect_error("{\"tags\":[]}", "tags: expected an object of strings");
	expect_error("{\"tags\":{\"a\":1}}", "tags: keys and values are strings");
	/* Fields of the API that a one-shot run does not support. */
	expect_error("{\"idle_timeout_s\":5}", "idle_timeout_s: needs a long-lived sandbox");
	expect_error("{\"cidr_allowlist\":\"x\"}", "cidr_allowlist: expected a list");
	expect_ok("{\"cidr_allowlist\":null,\"ports\":[],\"idle_timeout_s\":null}");
}

/* An allowlist: parsed strictly, normalized, kept once per range; private and other blocked
 * ranges refused; only with network egress; bounded. */
static void test_json_cidrs(void **state)
{
	(void)state;
	struct spec s;
	struct sk_error err = {0};
	spec_init(&s);
	assert_int_equal(apply(&s,
	                       "{\"network\":\"egress\",\"cidr_allowlist\":[\"198.51.100.0/24\","
	                       "\"203.0.113.7\",\"198.51.100.0/24\",\"0.0.0.0/0\",\"8.0.0.0/5\"]}",
	                       &err),
	                 0);
	assert_int_equal(spec_validate(&s, &err), 0);
	/* Ranges that only partly overlap a blocked one are taken: the blocked part stays so.
	 * 0.0.0.0/0 holds every other one: they go (an interval set refuses overlaps). */
	assert_int_equal(s.ncidrs, 1);
	char buf[SPEC_CIDR_MAX_CHARS + 1];
	spec_cidr_format(&s.cidrs[0], buf, sizeof(buf));
	assert_string_equal(buf, "0.0.0.0/0");
	spec_release(&s);

	/* Nested ranges are kept as the outer one, in either order; apart ones all stay. */
	spec_init(&s);
	assert_int_equal(apply(&s,
	                       "{\"network\":\"egress\",\"cidr_allowlist\":[\"198.51.100.0/25\","
	                       "\"203.0.113.7\",\"198.51.100.0/24\",\"198.51.100.128/26\","
	                       "\"203.0.113.0/24\",\"198.51.101.0/24\"]}",
	                       &err),
	                 0);
	assert_int_equal(s.ncidrs, 3);
	const char *const want[] = {"198.51.100.0/24", "203.0.113.0/24", "198.51.101.0/24"};
	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		spec_cidr_format(&s.cidrs[i], buf, sizeof(buf));
		assert_string_equal(buf, want[i]);
	}
	spec_release(&s);

	spec_init(&s);
	assert_int_equal(apply(&s, "{\"cidr_allowlist\":[\"198.51.100.0/24\"]}", &err), 0);
	assert_int_equal(spec_validate(&s, &err), EINPUT);
	assert_string_equal(err.msg, "cidr_allowlist: needs network \"egress\"");
	spec_release(&s);

	static const char *const bad[][2] = {
	    {"[\"10.1.2.0/24\"]", "cidr_allowlist: '10.1.2.0/24' lies in 10.0.0.0/8"},
	    {"[\"172.20.0.0/16\"]", "cidr_allowlist: '172.20.0.0/16' lies in 172.16.0.0/12"},
	    {"[\"192.168.1.1\"]", "cidr_allowlist: '192.168.1.1' lies in 192.168.0.0/16"},
	    {"[\"169.254.169.254/32\"]", "cidr_allowlist: '169.254.169.254/32' lies in 169.254"},
	    {"[\"127.0.0.1\"]", "cidr_allowlist: '127.0.0.1' lies in 127.0.0.0/8"},
	    {"[\"100.64.0.0/10\"]", "cidr_allowlist: '100.64.0.0/10' lies in 100.64.0.0/10"},
	    {"[\"239.1.1.1\"]", "cidr_allowlist: '239.1.1.1' lies in 224.0.0.0/4"},
	    {"[\"198.51.100.1/24\"]", "cidr_allowlist: '198.51.100.1/24' has host bits set; "
	                              "did you mean 198.51.100.0/24?"},
	    {"[\"198.51.100.0/33\"]", "cidr_allowlist: '198.51.100.0/33' is not an IPv4 range"},
	    {"[\"198.51.100.0/024\"]", "cidr_allowlist: '198.51.100.0/024' is not an IPv4"},
	    {"[\"198.51.100.0/\"]", "cidr_allowlist: '198.51.100.0/' is not an IPv4 range"},
	    {"[\"example.com\"]", "cidr_allowlist: 'example.com' is not an IPv4 range"},
	    {"[\"2001:db8::/32\"]", "cidr_allowlist: '2001:db8::/32' is not an IPv4 range"},
	    {"[\" 1.2.3.4\"]", "cidr_allowlist: ' 1.2.3.4' is not an IPv4 range"},
	    {"[1]", "cidr_allowlist[0]: expected a string"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char json[256];
		snprintf(json, sizeof(json), "{\"network\":\"egress\",\"cidr_allowlist\":%s}",
		         bad[i][0]);
		expect_error(json, bad[i][1]);
	}
	/* More entries than the limit: refused whole. */
	char json[8192] = "{\"network\":\"egress\",\"cidr_allowlist\":[";
	for (int i = 0; i <= SPEC_MAX_CIDRS; i++) {
		size_t n = strlen(json);
		snprintf(json + n, sizeof(json) - n, "%s\"198.51.%d.0/24\"", i ? "," : "", i);
	}
	size_t n = strlen(json);
	snprintf(json + n, sizeof(json) - n, "]}");
	expect_error(json, "cidr_allowlist: at most 64 entries");
}

/* Ports the server proxies to: kept in order, each checked. */
static void test_json_ports(void **state)
{
	(void)state;
	struct spec s;
	struct sk_error err = {0};
	spec_init(&s);
	assert_int_equal(apply(&s, "{\"ports\":[8080,1,65535]}", &err), 0);
	assert_int_equal(s.nports, 3);
	assert_int_equal(s.ports[0], 8080);
	assert_int_equal(s.ports[1], 1);
	assert_int_equal(s.ports[2], 65535);
	assert_int_equal(apply(&s, "{\"ports\":null}", &err), 0);
	assert_int_equal(s.nports, 0);
	spec_release(&s);
	expect_ok("{\"ports\":[80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95]}");
	expect_error("{\"ports\":[80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96]}",
	             "ports: at most 16");
	expect_error("{\"ports\":8080}", "ports: expected a list of port numbers");
	expect_error("{\"ports\":[0]}", "ports[0]: expected a port number from 1 to 65535");
	expect_error("{\"ports\":[80,65536]}", "ports[1]: expected a port number from 1 to 65535");
	expect_error("{\"ports\":[-1]}", "ports[0]: expected a port number");
	expect_error("{\"ports\":[\"80\"]}", "ports[0]: expected a port number");
	expect_error("{\"ports\":[80.5]}", "ports[0]: expected a port number");
	expect_error("{\"ports\":[null]}", "ports[0]: expected a port number");
	expect_error("{\"ports\":[80,81,80]}", "ports: 80 is given twice");
}

static int internal(struct spec *s, const char *json, struct sk_error *err)
{
	return spec_apply_json_flags(s, json, strlen(json), SPEC_JSON_INTERNAL, err);
}

/* The server's own fields: a digest is 64 lowercase hex digits, checked by spec_validate. */
static void test_json_image_digest(void **state)
{
	(void)state;
	const char *good = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	const char *bad[] = {"0123",
	                     "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
	                     "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg",
	                     "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0"};
	char json[256];
	struct spec s;
	struct sk_error err = {0};
	snprintf(json, sizeof(json), "{\"image_digest\":\"%s\",\"capture_layer\":true}", good);
	/* A client's body never sets them: unknown fields. */
	expect_error(json, "unknown field");
	expect_error("{\"capture_layer\":false}", "unknown field \"capture_layer\"");
	spec_init(&s);
	assert_int_equal(internal(&s, json, &err), 0);
	assert_int_equal(spec_validate(&s, &err), 0);
	assert_string_equal(s.image_digest, good);
	assert_true(s.capture_layer);
	spec_release(&s);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(json, sizeof(json), "{\"image_digest\":\"%s\"}", bad[i]);
		spec_init(&s);
		assert_int_equal(internal(&s, json, &err), 0);
		assert_int_equal(spec_validate(&s, &err), -SK_EINVAL_SPEC);
		assert_non_null(strstr(err.msg, "image_digest: expected 64 lowercase hex digits"));
		spec_release(&s);
	}
	spec_init(&s);
	assert_true(internal(&s, "{\"capture_layer\":1}", &err) < 0);
	assert_non_null(strstr(err.msg, "capture_layer: expected true or false"));
	assert_true(internal(&s, "{\"image_digest\":5}", &err) < 0);
	assert_non_null(strstr(err.msg, "image_digest"));
	spec_release(&s);
}

static void test_json_out_of_range(void **state)
{
	(void)state;
	expect_error("{\"cpu\":0.001}", "cpu: 0.001 is out of range [0.01, 1024]");
	expect_error("{\"cpu\":0}", "cpu: 0 is out of range [0.01, 1024]");
	expect_error("{\"cpu\":-1}", "cpu: -1 is out of range [0.01, 1024]");
	expect_error("{\"cpu\":1024.5}", "cpu: 1024.5 is out of range [0.01, 1024]");
	expect_error("{\"memory_mib\":3}", "memory_mib: 3 is out of range [4, 1048576]");
	expect_error("{\"memory_mib\":1048577}",
	             "memory_mib: 1048577 is out of range [4, 1048576]");
	expect_error("{\"memory_mib\":-64}", "memory_mib: -64 is out of range [4, 1048576]");
	expect_error("{\"memory_mib\":9223372036854775807}",
	             "memory_mib: 9223372036854775807 is out of range [4, 1048576]");
	expect_error("{\"disk_mib\":0}", "disk_mib: 0 is out of range [1, 1048576]");
	expect_error("{\"disk_mib\":1048577}", "disk_mib: 1048577 is out of range [1, 1048576]");
	expect_error("{\"pids\":0}", "pids: 0 is out of range [1, 4194304]");
	expect_error("{\"pids\":4194305}", "pids: 4194305 is out of range [1, 4194304]");
	expect_error("{\"pids\":-1}", "pids: -1 is out of range [1, 4194304]");
	expect_error("{\"timeout_s\":-0.5}", "timeout_s: -0.5 is out of range [0, 86400]");
	expect_error("{\"timeout_s\":86400.5}", "timeout_s: 86400.5 is out of range [0, 86400]");
	/* Numbers too large for jansson are invalid JSON, still the user's error. */
	expect_error("{\"memory_mib\":99999999999999999999}", "spec: invalid JSON");
	expect_error("{\"cpu\":1e400}", "spec: invalid JSON");

	/* The bounds themselves are accepted. */
	expect_ok("{\"cpu\":0.01,\"memory_mib\":4,\"disk_mib\":1,\"pids\":1,\"timeout_s\":0}");
	expect_ok("{\"cpu\":1024,\"memory_mib\":1048576,\"disk_mib\":1048576,\"pids\":4194304,"
	          "\"timeout_s\":86400}");
	expect_ok("{\"cpu\":1e-2,\"timeout_s\":8.64e4}");
}

static void test_json_duplicates(void **state)
{
	(void)state;
	expect_error("{\"image\":\"a\",\"image\":\"b\"}", "spec: invalid JSON");
	expect_error("{\"cpu\":1,\"memory_mib\":64,\"cpu\":2}", "spec: invalid JSON");
	expect_error("{\"env\":{\"A\":\"1\",\"A\":\"2\"}}", "spec: invalid JSON");
	expect_error("{\"tags\":{\"t\":\"1\",\"t\":\"1\"}}", "spec: invalid JSON");
	struct spec s;
	struct sk_error err = {0};
	spec_init(&s);
	assert_int_equal(apply(&s, "{\"pids\":5,\"pids\":6}", &err), EINPUT);
	assert_non_null(strstr(err.msg, "duplicate"));
	spec_release(&s);
}

static void test_json_not_object(void **state)
{
	(void)state;
	expect_error("[]", "spec: expected a JSON object");
	expect_error("[{\"image\":\"a\"}]", "spec: expected a JSON object");
	/* Scalars at the top are not even loaded (no JSON_DECODE_ANY). */
	expect_error("\"image\"", "spec: ");
	expect_error("1", "spec: ");
	expect_error("null", "spec: ");
	expect_error("true", "spec: ");
}

static void test_json_invalid(void **state)
{
	(void)state;
	expect_error("", "spec: invalid JSON at line 1");
	expect_error("{", "spec: invalid JSON at line 1");
	expect_error("{\"image\":}", "spec: invalid JSON at line 1");
	expect_error("{\"image\":\"a\",}", "spec: invalid JSON at line 1");
	expect_error("{\"image\":'a'}", "spec: invalid JSON at line 1");
	expect_error("{} {}", "spec: invalid JSON at line 1");
	expect_error("{}\n\nx", "spec: invalid JSON at line 3");
	expect_error("{\"image\":\"\xff\"}", "spec: invalid JSON at line 1");
	/* The length is what counts: the body stops at len even without a NUL. */
	expect_error_len("{\"image\":\"a\"}", 5, "spec: invalid JSON");
	struct spec s;
	struct sk_error err = {0};
	spec_init(&s);
	char buf[32];
	memcpy(buf, "{\"pids\":7}XXXX", 14);
	assert_int_equal(spec_apply_json(&s, buf, 10, &err), 0);
	assert_int_equal(s.pids, 7);
	spec_release(&s);
}

static void test_json_nul_bytes(void **state)
{
	(void)state;
	/* Escaped NULs in any string, values or keys. */
	expect_error("{\"image\":\"a\\u0000b\"}", "spec: invalid JSON");
	expect_error("{\"workdir\":\"/a\\u0000/b\"}", "spec: invalid JSON");
	expect_error("{\"command\":[\"sh\",\"a\\u0000b\"]}", "spec: invalid JSON");
	expect_error("{\"env\":{\"A\":\"x\\u0000y\"}}", "spec: invalid JSON");
	expect_error("{\"env\":{\"A\\u0000B\":\"x\"}}", "spec: invalid JSON");
	expect_error("{\"tags\":{\"t\":\"\\u0000\"}}", "spec: invalid JSON");
	expect_error("{\"ima\\u0000ge\":\"x\"}", "spec: invalid JSON");
	/* Raw NUL bytes inside the body, inside a string and after the object. */
	static const char raw1[] = "{\"image\":\"a\0b\"}";
	expect_error_len(raw1, sizeof(raw1) - 1, "spec: invalid JSON");
	static const char raw2[] = "{\"image\":\"a\"}\0";
	expect_error_len(raw2, sizeof(raw2) - 1, "spec: invalid JSON");
	static const char raw3[] = "\0{}";
	expect_error_len(raw3, sizeof(raw3) - 1, "spec: invalid JSON");
}

static void test_json_env_names(void **state)
{
	(void)state;
	expect_error("{\"env\":{\"1A\":\"x\"}}", "env: '1A' is not a valid name");
	expect_error("{\"env\":{\"A-B\":\"x\"}}", "env: 'A-B' is not a valid name");
	expect_error("{\"env\":{\"A B\":\"x\"}}", "env: 'A B' is not a valid name");
	expect_error("{\"env\":{\"A=B\":\"x\"}}", "env: 'A=B' is not a valid name");
	expect_error("{\"env\":{\"=\":\"x\"}}", "env: '=' is not a valid name");
	expect_error("{\"env\":{\"\":\"x\"}}", "env: '' is not a valid name");
	expect_error("{\"env\":{\"A.B\":\"x\"}}", "env: 'A.B' is not a valid name");
	expect_error("{\"env\":{\"\\u00e9\":\"x\"}}", "env: '\xc3\xa9' is not a valid name");
	expect_ok("{\"env\":{\"_\":\"x\",\"_1\":\"\",\"a\":\"=\",\"Path_9\":\"/bin\"}}");

	struct spec s;
	struct sk_error err = {0};
	spec_init(&s);
	assert_int_equal(spec_set_env(&s, "NOEQUALS", &err), EINPUT);
	assert_memory_equal(err.msg, "env: expected NAME=VALUE", 24);
	assert_int_equal(spec_set_env(&s, "=v", &err), EINPUT);
	assert_int_equal(spec_set_env(&s, "9=v", &err), EINPUT);
	assert_int_equal(spec_set_env(&s, "A-1=v", &err), EINPUT);
	assert_int_equal(spec_set_env(&s, "", &err), EINPUT);
	assert_int_equal(s.envc, 0);
	assert_null(s.env);
	assert_int_equal(spec_set_env(&s, "A=", &err), 0);
	assert_int_equal(spec_set_env(&s, "AB=1", &err), 0);
	assert_int_equal(spec_set_env(&s, "A=b=c", &err), 0); /* replaces A, not AB */
	assert_int_equal(spec_set_env(&s, "B=2", &err), 0);
	assert_int_equal(s.envc, 3);
	assert_string_equal(s.env[0], "A=b=c");
	assert_string_equal(s.env[1], "AB=1");
	assert_string_equal(s.env[2], "B=2");
	assert_null(s.env[3]);
	spec_release(&s);
}

static void test_limit_args(void **state)
{
	(void)state;
	char *ok = json_repeat("{\"command\":[", "\"a%zu\"", SPEC_MAX_ARGS, "]}");
	char *over = json_repeat("{\"command\":[", "\"a%zu\"", SPEC_MAX_ARGS + 1, "]}");
	struct spec s;
	struct sk_error err = {0};
	spec_init(&s);
	assert_int_equal(apply(&s, ok, &err), 0);
	assert_int_equal(s.argc, SPEC_MAX_ARGS);
	assert_string_equal(s.argv[SPEC_MAX_ARGS - 1], "a4095");
	assert_null(s.argv[SPEC_MAX_ARGS]);
	spec_release(&s);
	expect_error(over, "command: more than 4096 arguments");

	/* The setter enforces the same. */
	char **argv = calloc(SPEC_MAX_ARGS + 2, sizeof(char *));
	assert_non_null(argv);
	for (size_t i = 0; i < SPEC_MAX_ARGS + 1; i++)
		argv[i] = "x";
	spec_init(&s);
	assert_int_equal(spec_set_argv(&s, argv, SPEC_MAX_ARGS + 1, &err), EINPUT);
	assert_string_equal(err.msg, "command: more than 4096 arguments");
	assert_null(s.argv);
	assert_int_equal(spec_set_argv(&s, argv, SPEC_MAX_ARGS, &err), 0);
	assert_int_equal(s.argc, SPEC_MAX_ARGS);
	assert_int_equal(spec_set_argv(&s, argv, 0, &err), EINPUT);
	assert_string_equal(err.msg, "command: must not be empty");
	assert_int_equal(s.argc, SPEC_MAX_ARGS); /* unchanged on error */
	argv[0] = "";
	assert_int_equal(spec_set_argv(&s, argv, 1, &err), EINPUT);
	assert_string_equal(err.msg, "command: the program name is empty");
	spec_release(&s);
	free(argv);
	free(ok);
	free(over);
}

static void test_limit_env(void **state)
{
	(void)state;
	char *ok = json_repeat("{\"env\":{", "\"V%zu\":\"x\"", SPEC_MAX_ENV, "}}");
	char *over = json_repeat("{\"env\":{", "\"V%zu\":\"x\"", SPEC_MAX_ENV + 1, "}}");
	struct spec s;
	struct sk_error err = {0};
	spec_init(&s);
	assert_int_equal(apply(&s, ok, &err), 0);
	assert_int_equal(s.envc, SPEC_MAX_ENV);
	/* Full: a new name is refused, an existing one may still be replaced. */
	assert_int_equal(apply(&s, "{\"env\":{\"NEW\":\"1\"}}", &err), EINPUT);
	assert_string_equal(err.msg, "env: more than 1024 variables");
	assert_int_equal(spec_set_env(&s, "NEW=1", &err), EINPUT);
	assert_string_equal(err.msg, "env: more than 1024 variables");
	assert_int_equal(spec_set_env(&s, "V7=y", &err), 0);
	assert_string_equal(s.env[7], "V7=y");
	assert_int_equal(s.envc, SPEC_MAX_ENV);
	spec_release(&s);
	expect_error(over, "env: more than 1024 variables");
	free(ok);
	free(over);
}

static void test_limit_strings_bytes(void **state)
{
	(void)state;
	struct spec s;
	struct sk_error err = {0};
	/* One argument of exactly SPEC_MAX_STRINGS_BYTES with its NUL. */
	char *arg = chars_new(SPEC_MAX_STRINGS_BYTES - 1, 'a');
	size_t cap = SPEC_MAX_STRINGS_BYTES + 64;
	char *body = malloc(cap);
	assert_non_null(body);
	snprintf(body, cap, "{\"command\":[\"%s\"]}", arg);
	spec_init(&s);
	assert_int_equal(apply(&s, body, &err), 0);
	assert_int_equal(strlen(s.argv[0]), SPEC_MAX_STRINGS_BYTES - 1);
	/* Now any env at all is too much. */
	assert_int_equal(spec_set_env(&s, "A=", &err), EINPUT);
	assert_string_equal(err.msg, "command and env together exceed 262144 bytes");
	assert_int_equal(apply(&s, "{\"env\":{\"A\":\"\"}}", &err), EINPUT);
	assert_string_equal(err.msg, "command and env together exceed 262144 bytes");
	spec_release(&s);

	/* One byte more. */
	free(arg);
	arg = chars_new(SPEC_MAX_STRINGS_BYTES, 'a');
	snprintf(body, cap, "{\"command\":[\"%s\"]}", arg);
	expect_error(body, "command and env together exceed 262144 bytes");

	/* Across argv and env: 128 KiB of env, then a command that tips it over. */
	free(arg);
	arg = chars_new(128 * 1024 - 3, 'v'); /* "A=" + value + NUL = 128 KiB */
	snprintf(body, cap, "{\"env\":{\"A\":\"%s\"}}", arg);
	spec_init(&s);
	assert_int_equal(apply(&s, body, &err), 0);
	free(arg);
	arg = chars_new(128 * 1024 - 1, 'c');
	snprintf(body, cap, "{\"command\":[\"%s\"]}", arg);
	assert_int_equal(apply(&s, body, &err), 0);
	assert_int_equal(spec_set_env(&s, "B=", &err), EINPUT);
	assert_int_equal(s.envc, 1);
	free(arg);
	arg = chars_new(128 * 1024, 'c');
	snprintf(body, cap, "{\"command\":[\"%s\"]}", arg);
	assert_int_equal(apply(&s, body, &err), EINPUT);
	assert_string_equal(err.msg, "command and env together exceed 262144 bytes");
	assert_int_equal(strlen(s.argv[0]), 128 * 1024 - 1); /* the old command stays */
	spec_release(&s);

	/* One env value alone too long. */
	free(arg);
	arg = chars_new(SPEC_MAX_STRINGS_BYTES - 2, 'v'); /* "A=" + value + NUL: 1 too many */
	snprintf(body, cap, "{\"env\":{\"A\":\"%s\"}}", arg);
	expect_error(body, "env.A: too long");
	free(arg);
	arg = chars_new(SPEC_MAX_STRINGS_BYTES - 3, 'v');
	snprintf(body, cap, "{\"env\":{\"A\":\"%s\"}}", arg);
	expect_ok(body);
	free(arg);
	free(body);
}

static void test_limit_json_bytes(void **state)
{
	(void)state;
	/* Exactly SPEC_MAX_JSON_BYTES (padded with spaces) is accepted; one more is not. */
	char *body = malloc(SPEC_MAX_JSON_BYTES + 2);
	assert_non_null(body);
	memset(body, ' ', SPEC_MAX_JSON_BYTES + 1);
	memcpy(body, "{\"pids\":9}", 10);
	body[SPEC_MAX_JSON_BYTES + 1] = '\0';
	struct spec s;
	struct sk_error err = {0};
	spec_init(&s);
	assert_int_equal(spec_apply_json(&s, body, SPEC_MAX_JSON_BYTES, &err), 0);
	assert_int_equal(s.pids, 9);
	spec_release(&s);
	expect_error_len(body, SPEC_MAX_JSON_BYTES + 1, "spec: larger than 1048576 bytes");
	free(body);
}

static void test_limit_string_fields(void **state)
{
	(void)state;
	size_t cap = SPEC_MAX_PATH_BYTES + 64;
	char *body = malloc(cap);
	assert_non_null(body);
	char *path = chars_new(SPEC_MAX_PATH_BYTES, 'p');
	path[0] = '/';
	snprintf(body, cap, "{\"workdir\":\"%s\"}", path);
	expect_error(body, "workdir: longer than 4096 bytes");
	snprintf(body, cap, "{\"rootfs\":\"%s\"}", path);
	expect_error(body, "rootfs: longer than 4096 bytes");
	snprintf(body, cap, "{\"image\":\"%s\"}", path);
	expect_error(body, "image: longer than 4096 bytes");
	path[SPEC_MAX_PATH_BYTES - 1] = '\0';
	snprintf(body, cap, "{\"workdir\":\"%s\"}", path);
	expect_ok(body);
	free(path);

	char *tag = chars_new(SPEC_MAX_TAG_BYTES + 1, 't');
	snprintf(body, cap, "{\"tags\":{\"%s\":\"v\"}}", tag);
	expect_error(body, "tags: keys and values are strings of at most 256 bytes");
	snprintf(body, cap, "{\"tags\":{\"k\":\"%s\"}}", tag);
	expect_error(body, "tags: keys and values are strings of at most 256 bytes");
	tag[SPEC_MAX_TAG_BYTES] = '\0';
	snprintf(body, cap, "{\"tags\":{\"%s\":\"%s\"}}", tag, tag);
	expect_ok(body);
	free(tag);
	free(body);

	char *ok = json_repeat("{\"tags\":{", "\"t%zu\":\"\"", SPEC_MAX_TAGS, "}}");
	char *over = json_repeat("{\"tags\":{", "\"t%zu\":\"\"", SPEC_MAX_TAGS + 1, "}}");
	expect_ok(ok);
	expect_error(over, "tags: more than 64 tags");
	free(ok);
	free(over);
}

/* ---- spec_validate ---- */

static int validate_with(const char *field, const char *value, struct sk_error *err)
{
	struct spec s;
	spec_init(&s);
	char **slot = !strcmp(field, "workdir")    ? &s.workdir
	              : !strcmp(field, "hostname") ? &s.hostname
	              : !strcmp(field, "name")     ? &s.name
	                                           : &s.rootfs;
	assert_int_equal(spec_set_string(slot, value, field, err), 0);
	int r = spec_validate(&s, err);
	spec_release(&s);
	return r;
}

static void expect_valid(const char *field, const char *value)
{
	struct sk_error err = {0};
	int r = validate_with(field, value, &err);
	if (r != 0)
		print_error("%s '%s': %s\n", field, value, err.msg);
	assert_int_equal(r, 0);
}

static void expect_invalid(const char *field, const char *value)
{
	struct sk_error err = {0};
	int r = validate_with(field, value, &err);
	if (r != EINPUT)
		print_error("%s '%s' accepted\n", field, value);
	assert_int_equal(r, EINPUT);
	assert_int_equal(err.code, EINPUT);
	assert_memory_equal(err.msg, field, strlen(field));
	assert_memory_equal(err.msg + strlen(field), ": ", 2);
}

static void test_validate_strings(void **state)
{
	(void)state;
	expect_valid("workdir", "/");
	expect_valid("workdir", "/a/b c/..");
	expect_invalid("workdir", "");
	expect_invalid("workdir", "relative");
	expect_invalid("workdir", "./x");
	char *longp = chars_new(SPEC_MAX_PATH_BYTES, 'w');
	longp[0] = '/';
	expect_invalid("workdir", longp);
	longp[SPEC_MAX_PATH_BYTES - 1] = '\0';
	expect_valid("workdir", longp);
	expect_invalid("rootfs", "");
	expect_valid("rootfs", "rel/ok");
	expect_valid("rootfs", longp);
	longp[SPEC_MAX_PATH_BYTES - 1] = 'w';
	expect_invalid("rootfs", longp);
	free(longp);

	expect_valid("hostname", "a");
	expect_valid("hostname", "box-1.example.com");
	expect_valid("hostname", "9lives");
	expect_invalid("hostname", "");
	expect_invalid("hostname", "-box");
	expect_invalid("hostname", ".box");
	expect_invalid("hostname", "a_b");
	expect_invalid("hostname", "a b");
	expect_invalid("hostname", "a/b");
	expect_invalid("hostname", "h\xc3\xa9");
	char *h = chars_new(SPEC_MAX_HOSTNAME_BYTES, 'h');
	expect_valid("hostname", h);
	free(h);
	h = chars_new(SPEC_MAX_HOSTNAME_BYTES + 1, 'h');
	expect_invalid("hostname", h);
	free(h);

	expect_valid("name", "a");
	expect_valid("name", "0");
	expect_valid("name", "job_1-b.c");
	expect_invalid("name", "");
	expect_invalid("name", "-a");
	expect_invalid("name", "_a");
	expect_invalid("name", ".a");
	expect_invalid("name", "a/b");
	expect_invalid("name", "a b");
	expect_invalid("name", "..");
	char *n = chars_new(SPEC_MAX_NAME_BYTES, 'n');
	expect_valid("name", n);
	free(n);
	n = chars_new(SPEC_MAX_NAME_BYTES + 1, 'n');
	expect_invalid("name", n);
	free(n);

	/* Through JSON too: the body parses, validation refuses it. */
	struct spec s;
	struct sk_error err = {0};
	spec_init(&s);
	assert_int_equal(apply(&s, "{\"workdir\":\"tmp\",\"hostname\":\"-x\"}", &err), 0);
	assert_int_equal(spec_validate(&s, &err), EINPUT);
	assert_string_equal(err.msg, "workdir: must be an absolute path under 4096 bytes");
	spec_release(&s);
}

static void test_validate_numbers(void **state)
{
	(void)state;
	struct spec s;
	struct sk_error err = {0};
	spec_init(&s);
	s.cpu = NAN;
	assert_int_equal(spec_validate(&s, &err), EINPUT);
	assert_memory_equal(err.msg, "cpu: ", 5);
	s.cpu = 0.009;
	assert_int_equal(spec_validate(&s, &err), EINPUT);
	assert_string_equal(err.msg, "cpu: 0.009 is out of range [0.01, 1024]");
	s.cpu = 1024;
	assert_int_equal(spec_validate(&s, &err), 0);
	s.memory_mib = 3;
	assert_int_equal(spec_validate(&s, &err), EINPUT);
	assert_string_equal(err.msg, "memory_mib: 3 is out of range [4, 1048576]");
	s.memory_mib = SPEC_MAX_MEMORY_MIB + 1;
	assert_int_equal(spec_validate(&s, &err), EINPUT);
	s.memory_mib = 4;
	s.disk_mib = 0;
	assert_int_equal(spec_validate(&s, &err), EINPUT);
	assert_string_equal(err.msg, "disk_mib: 0 is out of range [1, 1048576]");
	s.disk_mib = 1;
	s.pids = SPEC_MAX_PIDS + 1;
	assert_int_equal(spec_validate(&s, &err), EINPUT);
	assert_string_equal(err.msg, "pids: 4194305 is out of range [1, 4194304]");
	s.pids = 1;
	s.timeout_s = NAN;
	assert_int_equal(spec_validate(&s, &err), EINPUT);
	assert_memory_equal(err.msg, "timeout_s: ", 11);
	s.timeout_s = -1;
	assert_int_equal(spec_validate(&s, &err), EINPUT);
	assert_string_equal(err.msg, "timeout_s: -1 is out of range [0, 86400]");
	s.timeout_s = INFINITY;
	assert_int_equal(spec_validate(&s, &err), EINPUT);
	s.timeout_s = 0;
	assert_int_equal(spec_validate(&s, &err), 0);
	spec_release(&s);
}

/* ---- parse helpers ---- */

static void test_parse_u64(void **state)
{
	(void)state;
	struct sk_error err = {0};
	uint64_t v = 77;
	assert_int_equal(spec_parse_u64("64", 4, 100, "--memory", &v, &err), 0);
	assert_int_equal(v, 64);
	assert_int_equal(spec_parse_u64("4", 4, 100, "--memory", &v, &err), 0);
	assert_int_equal(v, 4);
	assert_int_equal(spec_parse_u64("100", 4, 100, "--memory", &v, &err), 0);
	assert_int_equal(v, 100);
	assert_int_equal(spec_parse_u64("007", 0, 100, "--memory", &v, &err), 0);
	assert_int_equal(v, 7);
	assert_int_equal(spec_parse_u64("18446744073709551615", 0, UINT64_MAX, "x", &v, &err), 0);
	assert_true(v == UINT64_MAX);

	v = 77;
	static const char *const bad[] = {
	    "",
	    "-1",
	    "1e3",
	    "12abc",
	    " 5",
	    "5 ",
	    "+5",
	    "0x10",
	    "1.5",
	    "abc",
	    "18446744073709551616",
	    "99999999999999999999999999",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char want[128];
		snprintf(want, sizeof(want), "--pids: expected a whole number, got '%s'", bad[i]);
		assert_int_equal(spec_parse_u64(bad[i], 0, UINT64_MAX, "--pids", &v, &err), EINPUT);
		assert_int_equal(err.code, EINPUT);
		assert_string_equal(err.msg, want);
	}
	assert_int_equal(spec_parse_u64("3", 4, 100, "--memory", &v, &err), EINPUT);
	assert_string_equal(err.msg, "--memory: 3 is out of range [4, 100]");
	assert_int_equal(spec_parse_u64("101", 4, 100, "--memory", &v, &err), EINPUT);
	assert_string_equal(err.msg, "--memory: 101 is out of range [4, 100]");
	assert_int_equal(v, 77); /* never written on failure */
	/* A NULL error object still gets the code. */
	assert_int_equal(spec_parse_u64("x", 0, 1, "x", &v, NULL), EINPUT);
}

static void test_parse_double(void **state)
{
	(void)state;
	struct sk_error err = {0};
	double v = 77;
	assert_int_equal(spec_parse_double("0.5", 0.01, 1024, "--cpu", &v, &err), 0);
	assert_true(v == 0.5);
	assert_int_equal(spec_parse_double("1e3", 0.01, 1024, "--cpu", &v, &err), 0);
	assert_true(v == 1000.0);
	assert_int_equal(spec_parse_double("2", 0.01, 1024, "--cpu", &v, &err), 0);
	assert_true(v == 2.0);
	assert_int_equal(spec_parse_double("0.01", 0.01, 1024, "--cpu", &v, &err), 0);
	assert_true(v == 0.01);
	assert_int_equal(spec_parse_double("1024", 0.01, 1024, "--cpu", &v, &err), 0);
	assert_true(v == 1024.0);

	v = 77;
	static const char *const bad[] = {
	    "", "12abc", "1.5x", "abc", "nan", "inf", "-inf", "1e999", "-1e999", "0x", " ", "1 ",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char want[128];
		snprintf(want, sizeof(want), "--timeout: expected a number, got '%s'", bad[i]);
		assert_int_equal(spec_parse_double(bad[i], 0, 86400, "--timeout", &v, &err),
		                 EINPUT);
		assert_int_equal(err.code, EINPUT);
		assert_string_equal(err.msg, want);
	}
	assert_int_equal(spec_parse_double("-1", 0, 86400, "--timeout", &v, &err), EINPUT);
	assert_string_equal(err.msg, "--timeout: -1 is out of range [0, 86400]");
	assert_int_equal(spec_parse_double("1e5", 0, 86400, "--timeout", &v, &err), EINPUT);
	assert_string_equal(err.msg, "--timeout: 100000 is out of range [0, 86400]");
	assert_int_equal(spec_parse_double("0.001", 0.01, 1024, "--cpu", &v, &err), EINPUT);
	assert_string_equal(err.msg, "--cpu: 0.001 is out of range [0.01, 1024]");
	assert_true(v == 77); /* never written on failure */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),          cmocka_unit_test(test_release),
	    cmocka_unit_test(test_json_every_field),  cmocka_unit_test(test_json_unknown_fields),
	    cmocka_unit_test(test_json_wrong_types),  cmocka_unit_test(test_json_image_digest),
	    cmocka_unit_test(test_json_out_of_range), cmocka_unit_test(test_json_ports),
	    cmocka_unit_test(test_json_duplicates),   cmocka_unit_test(test_json_not_object),
	    cmocka_unit_test(test_json_invalid),      cmocka_unit_test(test_json_nul_bytes),
	    cmocka_unit_test(test_json_env_names),    cmocka_unit_test(test_limit_args),
	    cmocka_unit_test(test_limit_env),         cmocka_unit_test(test_limit_strings_bytes),
	    cmocka_unit_test(test_limit_json_bytes),  cmocka_unit_test(test_limit_string_fields),
	    cmocka_unit_test(test_validate_strings),  cmocka_unit_test(test_json_cidrs),
	    cmocka_unit_test(test_validate_numbers),  cmocka_unit_test(test_parse_u64),
	    cmocka_unit_test(test_parse_double),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
