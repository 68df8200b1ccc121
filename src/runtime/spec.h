/* A sandbox's specification: what to run and its limits. Built from defaults, then from the JSON
 * create body of API.md and/or command-line options; validated before anything touches the kernel.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "../lib/error.h"

/* Limits on what a client controls. */
#define SPEC_MAX_JSON_BYTES     (1024 * 1024)
#define SPEC_MAX_ARGS           4096
#define SPEC_MAX_ENV            1024
#define SPEC_MAX_STRINGS_BYTES  (256 * 1024) /* argv + env together, like ARG_MAX's spirit */
#define SPEC_MAX_PATH_BYTES     4096
#define SPEC_MAX_HOSTNAME_BYTES 63
#define SPEC_MAX_NAME_BYTES     63
#define SPEC_MAX_LABEL_BYTES    39
#define SPEC_MAX_TAGS           64
#define SPEC_MAX_TAG_BYTES      256
#define SPEC_MAX_CPU            1024.0
#define SPEC_MIN_CPU            0.01
#define SPEC_MIN_MEMORY_MIB     4
#define SPEC_MAX_MEMORY_MIB     (1024 * 1024)
#define SPEC_MAX_DISK_MIB       (1024 * 1024)
#define SPEC_MAX_PIDS           (1 << 22)
#define SPEC_MAX_TIMEOUT_S      86400.0
#define SPEC_MAX_PORTS          16 /* ports a sandbox declares it serves */
#define SPEC_MAX_CIDRS          64 /* entries of cidr_allowlist */
#define SPEC_CIDR_MAX_CHARS     18 /* "255.255.255.255/32" */
#define SPEC_DIGEST_HEX_CHARS   64 /* image_digest: a SHA-256 in lowercase hex */

/* Defaults (API.md). */
#define SPEC_DEFAULT_CPU        1.0
#define SPEC_DEFAULT_MEMORY_MIB 512
#define SPEC_DEFAULT_DISK_MIB   1024
#define SPEC_DEFAULT_PIDS       1024
#define SPEC_DEFAULT_TIMEOUT_S  300.0

enum spec_network { SPEC_NET_NONE = 0, SPEC_NET_EGRESS };

/* An IPv4 range: addr (host byte order) with its host bits clear, and a prefix length 0-32. */
struct spec_cidr {
	uint32_t addr;
	uint8_t prefix;
};

struct spec {
	char *image;  /* image name; NULL means the default ("busybox") */
	char *rootfs; /* host directory used as the read-only lower layer; overrides image */
	/* Set by the server, never by its clients (SPEC_JSON_INTERNAL): the manifest digest (64
	 * lowercase hex) of the image to start on, NULL: the default root; and capture_layer, a
	 * build step's sandbox whose writable layer is stored as a layer when its command ends. */
	char *image_digest;
	int capture_layer;
	char **argv; /* NULL-terminated; NULL when no command was given */
	size_t argc;
	char **env; /* "K=V", NULL-terminated */
	size_t envc;
	char *workdir;
	char *hostname;
	char *name;
	char *label; /* set by the caller, never from JSON: the API's id, recorded in the state */
	double cpu;
	uint64_t memory_mib;
	uint64_t disk_mib;
	uint64_t pids;
	double timeout_s; /* 0: none */
	enum spec_network network;
	/* TCP ports on the sandbox's loopback that the server proxies to (its own concern: the
	 * runtime keeps them, nothing more). Distinct, 1-65535, in the order given. */
	uint16_t ports[SPEC_MAX_PORTS];
	size_t nports;
	/* egress only: the public destinations it may reach (none: every public one). */
	struct spec_cidr cidrs[SPEC_MAX_CIDRS];
	size_t ncidrs;
};

/* Fill s with the defaults; s owns nothing yet. */
void spec_init(struct spec *s);
/* Free everything s owns and reset it to defaults. Accepts a zeroed struct. */
void spec_release(struct spec *s);

/* Apply the JSON create body (data, len bytes) on top of s. Unknown fields, wrong types, values out
 * of range: -SK_EINVAL_SPEC with a message naming the field. s may be partly changed on error. */
int spec_apply_json(struct spec *s, const char *data, size_t len, struct sk_error *err);
/* The same with flags: SPEC_JSON_INTERNAL also takes the server's own fields (image_digest,
 * capture_layer), which a client's body never may: the server sends them to its workers. */
#define SPEC_JSON_INTERNAL 1u
int spec_apply_json_flags(struct spec *s, const char *data, size_t len, unsigned flags,
                          struct sk_error *err);

/* Setters used by command-line parsing; each validates its value like the JSON path. */
int spec_set_env(struct spec *s, const char *kv, struct sk_error *err); /* "K=V" */
int spec_set_argv(struct spec *s, char *const *argv, size_t argc, struct sk_error *err);
int spec_set_string(char **field, const char *value, const char *what, struct sk_error *err);

/* Add one allowlist entry, "A.B.C.D/N" or "A.B.C.D" (/32). Refused: a malformed range, host
 * bits set, one that lies wholly in a range egress never reaches (spec_cidr_blocked), more than
 * SPEC_MAX_CIDRS. A duplicate, or a range inside one already listed, is kept once; a range
 * holding listed ones replaces them. */
int spec_add_cidr(struct spec *s, const char *text, struct sk_error *err);
/* "A.B.C.D/N" into buf (at least SPEC_CIDR_MAX_CHARS + 1 bytes). */
void spec_cidr_format(const struct spec_cidr *c, char *buf, size_t size);
/* Ranges an egress sandbox never reaches, whatever its allowlist says: "this" network, private,
 * CGNAT, loopback, link-local, IETF protocol assignments, benchmarking, multicast, reserved and
 * broadcast. NULL-terminated, for the firewall too. */
extern const char *const SPEC_BLOCKED_CIDRS[];
/* The blocked range that holds all of c, or NULL. */
const char *spec_cidr_blocked(const struct spec_cidr *c);

/* Check cross-field rules and every bound; call after all setters. */
int spec_validate(const struct spec *s, struct sk_error *err);

/* Parse helpers shared with the CLI: a decimal number with bounds, named for the message. */
int spec_parse_double(const char *str, double min, double max, const char *what, double *ret,
                      struct sk_error *err);
int spec_parse_u64(const char *str, uint64_t min, uint64_t max, const char *what, uint64_t *ret,
                   struct sk_error *err);
