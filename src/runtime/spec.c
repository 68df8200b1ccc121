#include "spec.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EINPUT (-SK_EINVAL_SPEC)

void spec_init(struct spec *s)
{
	memset(s, 0, sizeof(*s));
	s->cpu = SPEC_DEFAULT_CPU;
	s->memory_mib = SPEC_DEFAULT_MEMORY_MIB;
	s->disk_mib = SPEC_DEFAULT_DISK_MIB;
	s->pids = SPEC_DEFAULT_PIDS;
	s->timeout_s = SPEC_DEFAULT_TIMEOUT_S;
	s->network = SPEC_NET_NONE;
}

static void strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

void spec_release(struct spec *s)
{
	free(s->image);
	free(s->rootfs);
	free(s->image_digest);
	strv_free(s->argv);
	strv_free(s->env);
	free(s->workdir);
	free(s->hostname);
	free(s->name);
	free(s->label);
	spec_init(s);
}

int spec_parse_double(const char *str, double min, double max, const char *what, double *ret,
                      struct sk_error *err)
{
	char *end;
	errno = 0;
	double v = strtod(str, &end);
	if (errno || end == str || *end || !isfinite(v))
		return sk_error_set(err, EINPUT, "%s: expected a number, got '%s'", what, str);
	if (v < min || v > max)
		return sk_error_set(err, EINPUT, "%s: %g is out of range [%g, %g]", what, v, min,
		                    max);
	*ret = v;
	return 0;
}

int spec_parse_u64(const char *str, uint64_t min, uint64_t max, const char *what, uint64_t *ret,
                   struct sk_error *err)
{
	char *end;
	errno = 0;
	if (!isdigit((unsigned char)str[0]))
		return sk_error_set(err, EINPUT, "%s: expected a whole number, got '%s'", what,
		                    str);
	unsigned long long v = strtoull(str, &end, 10);
	if (errno || *end)
		return sk_error_set(err, EINPUT, "%s: expected a whole number, got '%s'", what,
		                    str);
	if (v < min || v > max)
		return sk_error_set(err, EINPUT, "%s: %llu is out of range [%llu, %llu]", what, v,
		                    (unsigned long long)min, (unsigned long long)max);
	*ret = v;
	return 0;
}

static int env_key_valid(const char *kv, size_t keylen)
{
	if (keylen == 0 || (!isalpha((unsigned char)kv[0]) && kv[0] != '_'))
		return 0;
	for (size_t i = 1; i < keylen; i++)
		if (!isalnum((unsigned char)kv[i]) && kv[i] != '_')
			return 0;
	return 1;
}

static size_t strv_bytes(char **v)
{
	size_t n = 0;
	for (char **p = v; p && *p; p++)
		n += strlen(*p) + 1;
	return n;
}

int spec_set_env(struct spec *s, const char *kv, struct sk_error *err)
{
	const char *eq = strchr(kv, '=');
	if (!eq || !env_key_valid(kv, eq - kv))
		return sk_error_set(
		    err, EINPUT,
		    "env: expected NAME=VALUE with NAME of letters, digits and _, got '%.64s'", kv);
	size_t keylen = eq - kv;
	/* Replace an existing entry with the same name. */
	for (size_t i = 0; i < s->envc; i++) {
		if (strncmp(s->env[i], kv, keylen + 1) == 0) {
			if (strv_bytes(s->env) - strlen(s->env[i]) + strlen(kv) +
			        strv_bytes(s->argv) >
			    SPEC_MAX_STRINGS_BYTES)
				return sk_error_set(err, EINPUT,
				                    "command and env together exceed %d bytes",
				                    SPEC_MAX_STRINGS_BYTES);
			char *dup = strdup(kv);
			if (!dup)
				return sk_error_set(err, -ENOMEM, "out of memory");
			free(s->env[i]);
			s->env[i] = dup;
			return 0;
		}
	}
	if (s->envc >= SPEC_MAX_ENV)
		return sk_error_set(err, EINPUT, "env: more than %d variables", SPEC_MAX_ENV);
	if (strv_bytes(s->env) + strv_bytes(s->argv) + strlen(kv) + 1 > SPEC_MAX_STRINGS_BYTES)
		return sk_error_set(err, EINPUT, "command and env together exceed %d bytes",
		                    SPEC_MAX_STRINGS_BYTES);
	char **nv = realloc(s->env, (s->envc + 2) * sizeof(char *));
	if (!nv)
		return sk_error_set(err, -ENOMEM, "out of memory");
	s->env = nv;
	if (!(s->env[s->envc] = strdup(kv)))
		return sk_error_set(err, -ENOMEM, "out of memory");
	s->env[++s->envc] = NULL;
	return 0;
}

int spec_set_argv(struct spec *s, char *const *argv, size_t argc, struct sk_error *err)
{
	if (argc == 0)
		return sk_error_set(err, EINPUT, "command: must not be empty");
	if (argc > SPEC_MAX_ARGS)
		return sk_error_set(err, EINPUT, "command: more than %d arguments", SPEC_MAX_ARGS);
	size_t bytes = strv_bytes(s->env);
	for (size_t i = 0; i < argc; i++)
		bytes += strlen(argv[i]) + 1;
	if (bytes > SPEC_MAX_STRINGS_BYTES)
		return sk_error_set(err, EINPUT, "command and env together exceed %d bytes",
		                    SPEC_MAX_STRINGS_BYTES);
	if (argv[0][0] == '\0')
		return sk_error_set(err, EINPUT, "command: the program name is empty");
	char **v = calloc(argc + 1, sizeof(char *));
	if (!v)
		return sk_error_set(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < argc; i++) {
		if (!(v[i] = strdup(argv[i]))) {
			strv_free(v);
			return sk_error_set(err, -ENOMEM, "out of memory");
		}
	}
	strv_free(s->argv);
	s->argv = v;
	s->argc = argc;
	return 0;
}

int spec_set_string(char **field, const char *value, const char *what, struct sk_error *err)
{
	char *dup = strdup(value);
	if (!dup)
		return sk_error_set(err, -ENOMEM, "out of memory");
	(void)what;
	free(*field);
	*field = dup;
	return 0;
}

static int digest_valid(const char *h)
{
	return strlen(h) == SPEC_DIGEST_HEX_CHARS &&
	       strspn(h, "0123456789abcdef") == SPEC_DIGEST_HEX_CHARS;
}

static int hostname_valid(const char *h)
{
	size_t n = strlen(h);
	if (n == 0 || n > SPEC_MAX_HOSTNAME_BYTES || h[0] == '-' || h[0] == '.')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)h[i]) && h[i] != '-' && h[i] != '.')
			return 0;
	return 1;
}

static int name_valid(const char *h)
{
	size_t n = strlen(h);
	if (n == 0 || n > SPEC_MAX_NAME_BYTES || !isalnum((unsigned char)h[0]))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)h[i]) && h[i] != '-' && h[i] != '_' && h[i] != '.')
			return 0;
	return 1;
}

int spec_validate(const struct spec *s, struct sk_error *err)
{
	/* The setters enforce these; a spec built by other means must meet them too. */
	if (s->argc > SPEC_MAX_ARGS || s->envc > SPEC_MAX_ENV)
		return sk_error_set(err, EINPUT, "command: at most %d arguments and %d variables",
		                    SPEC_MAX_ARGS, SPEC_MAX_ENV);
	if (strv_bytes(s->argv) + strv_bytes(s->env) > SPEC_MAX_STRINGS_BYTES)
		return sk_error_set(err, EINPUT, "command and env together exceed %d bytes",
		                    SPEC_MAX_STRINGS_BYTES);
	if (s->workdir && (s->workdir[0] != '/' || strlen(s->workdir) >= SPEC_MAX_PATH_BYTES))
		return sk_error_set(err, EINPUT, "workdir: must be an absolute path under %d bytes",
		                    SPEC_MAX_PATH_BYTES);
	if (s->rootfs && (s->rootfs[0] == '\0' || strlen(s->rootfs) >= SPEC_MAX_PATH_BYTES))
		return sk_error_set(err, EINPUT, "rootfs: must be a path under %d bytes",
		                    SPEC_MAX_PATH_BYTES);
	if (s->image_digest && !digest_valid(s->image_digest))
		return sk_error_set(err, EINPUT, "image_digest: expected %d lowercase hex digits",
		                    SPEC_DIGEST_HEX_CHARS);
	if (s->hostname && !hostname_valid(s->hostname))
		return sk_error_set(
		    err, EINPUT,
		    "hostname: 1-%d letters, digits, '-' and '.', not starting with '-' or '.'",
		    SPEC_MAX_HOSTNAME_BYTES);
	if (s->name && !name_valid(s->name))
		return sk_error_set(
		    err, EINPUT,
		    "name: 1-%d letters, digits, '-', '_' and '.', starting with a letter or digit",
		    SPEC_MAX_NAME_BYTES);
	if (s->label && (strlen(s->label) > SPEC_MAX_LABEL_BYTES ||
	                 strspn(s->label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                                  "0123456789-_") != strlen(s->label)))
		return sk_error_set(err, EINPUT, "label: 1-%d letters, digits, '-' and '_'",
		                    SPEC_MAX_LABEL_BYTES);
	if (!(s->cpu >= SPEC_MIN_CPU && s->cpu <= SPEC_MAX_CPU))
		return sk_error_set(err, EINPUT, "cpu: %g is out of range [%g, %g]", s->cpu,
		                    SPEC_MIN_CPU, SPEC_MAX_CPU);
	if (s->memory_mib < SPEC_MIN_MEMORY_MIB || s->memory_mib > SPEC_MAX_MEMORY_MIB)
		return sk_error_set(err, EINPUT, "memory_mib: %llu is out of range [%d, %d]",
		                    (unsigned long long)s->memory_mib, SPEC_MIN_MEMORY_MIB,
		                    SPEC_MAX_MEMORY_MIB);
	if (s->disk_mib < 1 || s->disk_mib > SPEC_MAX_DISK_MIB)
		return sk_error_set(err, EINPUT, "disk_mib: %llu is out of range [1, %d]",
		                    (unsigned long long)s->disk_mib, SPEC_MAX_DISK_MIB);
	if (s->pids < 1 || s->pids > SPEC_MAX_PIDS)
		return sk_error_set(err, EINPUT, "pids: %llu is out of range [1, %d]",
		                    (unsigned long long)s->pids, SPEC_MAX_PIDS);
	if (!(s->timeout_s >= 0 && s->timeout_s <= SPEC_MAX_TIMEOUT_S))
		return sk_error_set(err, EINPUT, "timeout_s: %g is out of range [0, %g]",
		                    s->timeout_s, SPEC_MAX_TIMEOUT_S);
	if (s->ncidrs > SPEC_MAX_CIDRS)
		return sk_error_set(err, EINPUT, "cidr_allowlist: at most %d entries",
		                    SPEC_MAX_CIDRS);
	if (s->ncidrs && s->network != SPEC_NET_EGRESS)
		return sk_error_set(err, EINPUT, "cidr_allowlist: needs network \"egress\"");
	return 0;
}

/* ---- JSON ---- */

static int json_string_field(json_t *v, const char *key, char **field, struct sk_error *err)
{
	if (json_is_null(v)) {
		free(*field);
		*field = NULL;
		return 0;
	}
	if (!json_is_string(v))
		return sk_error_set(err, EINPUT, "%s: expected a string", key);
	if (json_string_length(v) != strlen(json_string_value(v)))
		return sk_error_set(err, EINPUT, "%s: must not contain NUL bytes", key);
	if (json_string_length(v) >= SPEC_MAX_PATH_BYTES)
		return sk_error_set(err, EINPUT, "%s: longer than %d bytes", key,
		                    SPEC_MAX_PATH_BYTES);
	return spec_set_string(field, json_string_value(v), key, err);
}

static int json_number_field(json_t *v, const char *key, double min, double max, double *ret,
                             struct sk_error *err)
{
	if (!json_is_number(v))
		return sk_error_set(err, EINPUT, "%s: expected a number", key);
	double d = json_number_value(v);
	if (!(d >= min && d <= max))
		return sk_error_set(err, EINPUT, "%s: %g is out of range [%g, %g]", key, d, min,
		                    max);
	*ret = d;
	return 0;
}

static int json_uint_field(json_t *v, const char *key, uint64_t min, uint64_t max, uint64_t *ret,
                           struct sk_error *err)
{
	if (!json_is_integer(v))
		return sk_error_set(err, EINPUT, "%s: expected a whole number", key);
	json_int_t i = json_integer_value(v);
	if (i < 0 || (uint64_t)i < min || (uint64_t)i > max)
		return sk_error_set(err, EINPUT, "%s: %lld is out of range [%llu, %llu]", key,
		                    (long long)i, (unsigned long long)min, (unsigned long long)max);
	*ret = i;
	return 0;
}

static int json_command(struct spec *s, json_t *v, struct sk_error *err)
{
	if (json_is_null(v))
		return 0;
	if (!json_is_array(v))
		return sk_error_set(err, EINPUT, "command: expected an array of strings");
	size_t n = json_array_size(v);
	if (n > SPEC_MAX_ARGS)
		return sk_error_set(err, EINPUT, "command: more than %d arguments", SPEC_MAX_ARGS);
	_cleanup_free_ char **argv = calloc(n + 1, sizeof(char *));
	if (!argv)
		return sk_error_set(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		json_t *a = json_array_get(v, i);
		if (!json_is_string(a))
			return sk_error_set(err, EINPUT, "command[%zu]: expected a string", i);
		if (json_string_length(a) != strlen(json_string_value(a)))
			return sk_error_set(err, EINPUT, "command[%zu]: must not contain NUL bytes",
			                    i);
		argv[i] = (char *)json_string_value(a);
	}
	return spec_set_argv(s, argv, n, err);
}

static int json_env(struct spec *s, json_t *v, struct sk_error *err)
{
	if (json_is_null(v))
		return 0;
	if (!json_is_object(v))
		return sk_error_set(err, EINPUT, "env: expected an object of strings");
	if (json_object_size(v) > SPEC_MAX_ENV)
		return sk_error_set(err, EINPUT, "env: more than %d variables", SPEC_MAX_ENV);
	const char *key;
	json_t *val;
	json_object_foreach (v, key, val) {
		if (!json_is_string(val))
			return sk_error_set(err, EINPUT, "env.%.64s: expected a string", key);
		if (json_string_length(val) != strlen(json_string_value(val)))
			return sk_error_set(err, EINPUT, "env.%.64s: must not contain NUL bytes",
			                    key);
		size_t klen = strlen(key), vlen = json_string_length(val);
		if (klen + vlen + 2 > SPEC_MAX_STRINGS_BYTES)
			return sk_error_set(err, EINPUT, "env.%.64s: too long", key);
		_cleanup_free_ char *kv = malloc(klen + vlen + 2);
		if (!kv)
			return sk_error_set(err, -ENOMEM, "out of memory");
		memcpy(kv, key, klen);
		kv[klen] = '=';
		memcpy(kv + klen + 1, json_string_value(val), vlen + 1);
		if (strchr(key, '=') || !env_key_valid(kv, klen))
			return sk_error_set(
			    err, EINPUT, "env: '%.64s' is not a valid name (letters, digits and _)",
			    key);
		int r = spec_set_env(s, kv, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static int json_tags(json_t *v, struct sk_error *err)
{
	if (json_is_null(v))
		return 0;
	if (!json_is_object(v))
		return sk_error_set(err, EINPUT, "tags: expected an object of strings");
	if (json_object_size(v) > SPEC_MAX_TAGS)
		return sk_error_set(err, EINPUT, "tags: more than %d tags", SPEC_MAX_TAGS);
	const char *key;
	json_t *val;
	json_object_foreach (v, key, val) {
		if (!json_is_string(val) || strlen(key) > SPEC_MAX_TAG_BYTES ||
		    json_string_length(val) > SPEC_MAX_TAG_BYTES)
			return sk_error_set(err, EINPUT,
			                    "tags: keys and values are strings of at most %d bytes",
			                    SPEC_MAX_TAG_BYTES);
	}
	return 0;
}

static int json_network(struct spec *s, json_t *v, struct sk_error *err)
{
	if (!json_is_string(v))
		return sk_error_set(err, EINPUT, "network: expected \"none\" or \"egress\"");
	const char *n = json_string_value(v);
	if (!strcmp(n, "none"))
		s->network = SPEC_NET_NONE;
	else if (!strcmp(n, "egress"))
		s->network = SPEC_NET_EGRESS;
	else
		return sk_error_set(err, EINPUT,
		                    "network: expected \"none\" or \"egress\", got \"%.32s\"", n);
	return 0;
}

const char *const SPEC_BLOCKED_CIDRS[] = {
    "0.0.0.0/8",      "10.0.0.0/8",    "100.64.0.0/10", "127.0.0.0/8",
    "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",  "192.168.0.0/16",
    "198.18.0.0/15",  "224.0.0.0/4",   "240.0.0.0/4",   NULL,
};

static uint32_t prefix_mask(unsigned prefix)
{
	return prefix == 0 ? 0 : 0xffffffffu << (32 - prefix);
}

/* Parse "A.B.C.D/N" or "A.B.C.D" strictly (no leading zeros, no spaces). */
static int cidr_parse(const char *text, struct spec_cidr *ret)
{
	char addr[16];
	const char *slash = strchr(text, '/');
	size_t alen = slash ? (size_t)(slash - text) : strlen(text);
	if (alen == 0 || alen >= sizeof(addr))
		return -EINVAL;
	memcpy(addr, text, alen);
	addr[alen] = '\0';
	struct in_addr in;
	if (inet_pton(AF_INET, addr, &in) != 1)
		return -EINVAL;
	unsigned prefix = 32;
	if (slash) {
		const char *p = slash + 1;
		if (!isdigit((unsigned char)p[0]) || strlen(p) > 2 || (p[0] == '0' && p[1]) ||
		    (p[1] && !isdigit((unsigned char)p[1])))
			return -EINVAL;
		prefix = (unsigned)atoi(p);
		if (prefix > 32)
			return -EINVAL;
	}
	ret->addr = ntohl(in.s_addr);
	ret->prefix = (uint8_t)prefix;
	return 0;
}

void spec_cidr_format(const struct spec_cidr *c, char *buf, size_t size)
{
	snprintf(buf, size, "%u.%u.%u.%u/%u", c->addr >> 24, (c->addr >> 16) & 0xff,
	         (c->addr >> 8) & 0xff, c->addr & 0xff, c->prefix);
}

/* Whether outer holds all of inner. */
static int cidr_contains(const struct spec_cidr *outer, const struct spec_cidr *inner)
{
	return inner->prefix >= outer->prefix &&
	       (inner->addr & prefix_mask(outer->prefix)) == outer->addr;
}

const char *spec_cidr_blocked(const struct spec_cidr *c)
{
	for (size_t i = 0; SPEC_BLOCKED_CIDRS[i]; i++) {
		struct spec_cidr b;
		if (cidr_parse(SPEC_BLOCKED_CIDRS[i], &b) < 0)
			continue;
		if (cidr_contains(&b, c))
			return SPEC_BLOCKED_CIDRS[i];
	}
	return NULL;
}

int spec_add_cidr(struct spec *s, const char *text, struct sk_error *err)
{
	struct spec_cidr c;
	if (cidr_parse(text, &c) < 0)
		return sk_error_set(
		    err, EINPUT,
		    "cidr_allowlist: '%.32s' is not an IPv4 range like 198.51.100.0/24", text);
	if (c.addr & ~prefix_mask(c.prefix)) {
		struct spec_cidr net = {.addr = c.addr & prefix_mask(c.prefix), .prefix = c.prefix};
		char buf[SPEC_CIDR_MAX_CHARS + 1];
		spec_cidr_format(&net, buf, sizeof(buf));
		return sk_error_set(err, EINPUT,
		                    "cidr_allowlist: '%.32s' has host bits set; did you mean %s?",
		                    text, buf);
	}
	const char *blocked = spec_cidr_blocked(&c);
	if (blocked)
		return sk_error_set(
		    err, EINPUT,
		    "cidr_allowlist: '%.32s' lies in %s, which an egress sandbox never "
		    "reaches (private, loopback, link-local and reserved ranges stay "
		    "blocked); list public destinations only",
		    text, blocked);
	/* Kept as ranges that do not overlap (two IPv4 ranges either nest or are apart): the
	 * firewall's interval set refuses overlapping elements, which would fail the start. */
	size_t kept = 0;
	for (size_t i = 0; i < s->ncidrs; i++) {
		if (cidr_contains(&s->cidrs[i], &c))
			return 0;
		if (!cidr_contains(&c, &s->cidrs[i]))
			s->cidrs[kept++] = s->cidrs[i];
	}
	s->ncidrs = kept;
	if (s->ncidrs >= SPEC_MAX_CIDRS)
		return sk_error_set(err, EINPUT, "cidr_allowlist: at most %d entries",
		                    SPEC_MAX_CIDRS);
	s->cidrs[s->ncidrs++] = c;
	return 0;
}

static int json_cidrs(struct spec *s, json_t *v, struct sk_error *err)
{
	s->ncidrs = 0;
	if (json_is_null(v))
		return 0;
	if (!json_is_array(v))
		return sk_error_set(err, EINPUT, "cidr_allowlist: expected a list of IPv4 ranges");
	if (json_array_size(v) > SPEC_MAX_CIDRS)
		return sk_error_set(err, EINPUT, "cidr_allowlist: at most %d entries",
		                    SPEC_MAX_CIDRS);
	size_t i;
	json_t *c;
	json_array_foreach (v, i, c) {
		if (!json_is_string(c))
			return sk_error_set(err, EINPUT,
			                    "cidr_allowlist[%zu]: expected a string like "
			                    "\"198.51.100.0/24\"",
			                    i);
		int r = spec_add_cidr(s, json_string_value(c), err);
		if (r < 0)
			return r;
	}
	return 0;
}

static int json_ports(struct spec *s, json_t *v, struct sk_error *err)
{
	s->nports = 0;
	if (json_is_null(v))
		return 0;
	if (!json_is_array(v))
		return sk_error_set(err, EINPUT, "ports: expected a list of port numbers");
	if (json_array_size(v) > SPEC_MAX_PORTS)
		return sk_error_set(err, EINPUT, "ports: at most %d", SPEC_MAX_PORTS);
	size_t i;
	json_t *p;
	json_array_foreach (v, i, p) {
		json_int_t n = json_integer_value(p);
		if (!json_is_integer(p) || n < 1 || n > 65535)
			return sk_error_set(
			    err, EINPUT, "ports[%zu]: expected a port number from 1 to 65535", i);
		for (size_t j = 0; j < s->nports; j++)
			if (s->ports[j] == n)
				return sk_error_set(err, EINPUT, "ports: %lld is given twice",
				                    (long long)n);
		s->ports[s->nports++] = (uint16_t)n;
	}
	return 0;
}

/* The fields only the server sets (spec.h): never from a client's body. */
static int json_internal_field(struct spec *s, const char *key, json_t *v, struct sk_error *err)
{
	if (!strcmp(key, "image_digest"))
		return json_string_field(v, key, &s->image_digest, err);
	if (!json_is_boolean(v) && !json_is_null(v))
		return sk_error_set(err, EINPUT, "capture_layer: expected true or false");
	s->capture_layer = json_is_true(v);
	return 0;
}

static int json_field(struct spec *s, const char *key, json_t *v, unsigned flags,
                      struct sk_error *err)
{
	if ((flags & SPEC_JSON_INTERNAL) &&
	    (!strcmp(key, "image_digest") || !strcmp(key, "capture_layer")))
		return json_internal_field(s, key, v, err);
	if (!strcmp(key, "image"))
		return json_string_field(v, key, &s->image, err);
	if (!strcmp(key, "rootfs"))
		return json_string_field(v, key, &s->rootfs, err);
	if (!strcmp(key, "command"))
		return json_command(s, v, err);
	if (!strcmp(key, "env"))
		return json_env(s, v, err);
	if (!strcmp(key, "workdir"))
		return json_string_field(v, key, &s->workdir, err);
	if (!strcmp(key, "hostname"))
		return json_string_field(v, key, &s->hostname, err);
	if (!strcmp(key, "name"))
		return json_string_field(v, key, &s->name, err);
	if (!strcmp(key, "cpu"))
		return json_number_field(v, key, SPEC_MIN_CPU, SPEC_MAX_CPU, &s->cpu, err);
	if (!strcmp(key, "memory_mib"))
		return json_uint_field(v, key, SPEC_MIN_MEMORY_MIB, SPEC_MAX_MEMORY_MIB,
		                       &s->memory_mib, err);
	if (!strcmp(key, "disk_mib"))
		return json_uint_field(v, key, 1, SPEC_MAX_DISK_MIB, &s->disk_mib, err);
	if (!strcmp(key, "pids"))
		return json_uint_field(v, key, 1, SPEC_MAX_PIDS, &s->pids, err);
	if (!strcmp(key, "timeout_s"))
		return json_number_field(v, key, 0, SPEC_MAX_TIMEOUT_S, &s->timeout_s, err);
	if (!strcmp(key, "idle_timeout_s")) {
		if (json_is_null(v))
			return 0;
		return sk_error_set(
		    err, EINPUT,
		    "idle_timeout_s: needs a long-lived sandbox (not supported by a one-shot run)");
	}
	if (!strcmp(key, "network"))
		return json_network(s, v, err);
	if (!strcmp(key, "cidr_allowlist"))
		return json_cidrs(s, v, err);
	if (!strcmp(key, "ports"))
		return json_ports(s, v, err);
	if (!strcmp(key, "tags"))
		return json_tags(v, err);
	return sk_error_set(err, EINPUT, "unknown field \"%.64s\"", key);
}

int spec_apply_json(struct spec *s, const char *data, size_t len, struct sk_error *err)
{
	return spec_apply_json_flags(s, data, len, 0, err);
}

int spec_apply_json_flags(struct spec *s, const char *data, size_t len, unsigned flags,
                          struct sk_error *err)
{
	if (len > SPEC_MAX_JSON_BYTES)
		return sk_error_set(err, EINPUT, "spec: larger than %d bytes", SPEC_MAX_JSON_BYTES);
	json_error_t jerr;
	json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return sk_error_set(err, EINPUT, "spec: invalid JSON at line %d column %d: %s",
		                    jerr.line, jerr.column, jerr.text);
	int r = 0;
	if (!json_is_object(root)) {
		r = sk_error_set(err, EINPUT, "spec: expected a JSON object");
		goto out;
	}
	const char *key;
	json_t *v;
	json_object_foreach (root, key, v) {
		if ((r = json_field(s, key, v, flags, err)) < 0)
			goto out;
	}
out:
	json_decref(root);
	return r;
}
