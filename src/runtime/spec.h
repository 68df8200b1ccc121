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

/* Defaults (API.md). */
#define SPEC_DEFAULT_CPU        1.0
#define SPEC_DEFAULT_MEMORY_MIB 512
#define SPEC_DEFAULT_DISK_MIB   1024
#define SPEC_DEFAULT_PIDS       1024
#define SPEC_DEFAULT_TIMEOUT_S  300.0

enum spec_network { SPEC_NET_NONE = 0, SPEC_NET_EGRESS };

struct spec {
	char *image;  /* image name; NULL means the default ("busybox") */
	char *rootfs; /* host directory used as the read-only lower layer; overrides image */
	char **argv;  /* NULL-terminated; NULL when no command was given */
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
};

/* Fill s with the defaults; s owns nothing yet. */
void spec_init(struct spec *s);
/* Free everything s owns and reset it to defaults. Accepts a zeroed struct. */
void spec_release(struct spec *s);

/* Apply the JSON create body (data, len bytes) on top of s. Unknown fields, wrong types, values out
 * of range: -SK_EINVAL_SPEC with a message naming the field. s may be partly changed on error. */
int spec_apply_json(struct spec *s, const char *data, size_t len, struct sk_error *err);

/* Setters used by command-line parsing; each validates its value like the JSON path. */
int spec_set_env(struct spec *s, const char *kv, struct sk_error *err); /* "K=V" */
int spec_set_argv(struct spec *s, char *const *argv, size_t argc, struct sk_error *err);
int spec_set_string(char **field, const char *value, const char *what, struct sk_error *err);

/* Check cross-field rules and every bound; call after all setters. */
int spec_validate(const struct spec *s, struct sk_error *err);

/* Parse helpers shared with the CLI: a decimal number with bounds, named for the message. */
int spec_parse_double(const char *str, double min, double max, const char *what, double *ret,
                      struct sk_error *err);
int spec_parse_u64(const char *str, uint64_t min, uint64_t max, const char *what, uint64_t *ret,
                   struct sk_error *err);
