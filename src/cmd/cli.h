/* What the skiff client's files share: the context of one invocation, the command tables, HTTP
 * requests to the REST API, option parsing and output helpers. Commands return the process's exit
 * status: 0, 1 for a failed request (reported once, as "skiff: <message>"), EXIT_USAGE for a bad
 * command line, or the status of what ran in a sandbox. */
#pragma once

#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "../lib/error.h"
#include "../lib/macros.h"
#include "skiff_box.h" /* EXIT_USAGE, SKIFF_VERSION */

#define CLI_DEFAULT_URL        "http://127.0.0.1:7457"
#define CLI_MAX_RESPONSE_BYTES (64u << 20) /* a reply past this is an error, not a crash */
#define CLI_MAX_TOKEN_BYTES    4096
#define CLI_MAX_URL_BYTES      2048
#define CLI_MAX_CONFIG_BYTES   (64u << 10)
#define CLI_MAX_LIST_PAGES     10000 /* a server that never ends a list must not loop us forever */
#define CLI_LIST_PAGE_LIMIT    100
#define CLI_CONNECT_TIMEOUT_MS 5000L
#define CLI_REQUEST_TIMEOUT_S  300L /* total time of an ordinary request */
#define CLI_WAIT_MARGIN_S      60L  /* added to a server-side wait for the request's own limit */
#define CLI_NO_TIMEOUT         0L   /* exec without a timeout: bounded by the sandbox's own */
#define CLI_MAX_BLOB_BYTES     (4ULL << 30) /* one upload: the server's default limit on a blob */
#define CLI_MAX_TAR_ENTRIES    (1u << 20)   /* files in one copied tree */

/* One invocation: where the server is and how to authenticate. */
struct cli {
	const char *url_opt;   /* --url, or NULL */
	const char *token_opt; /* --token, or NULL */
	char *url;             /* resolved on first use (no trailing slash) */
	char *token;           /* resolved on first use; never printed */
	void *curl;            /* CURL *, made on first use */
	/* How many SIGINT/SIGTERM end a request in flight: 0 never, 1 the first (see
	 * cli_signals_*). */
	int abort_after_signals;
};

void cli_release(struct cli *c);

/* A subcommand: `skiff <group> <name> …`. argv[0] is the subcommand's name. */
struct cli_command {
	const char *name;
	int (*run)(struct cli *c, int argc, char **argv);
	const char *usage;   /* the arguments, after "skiff <group> <name> " */
	const char *summary; /* its first line goes in the group's help; all in the command's */
};

/* Run the subcommand argv[1] of group from table; handles --help and unknown names. argv[0] is the
 * group's name. */
int cli_group_run(struct cli *c, const char *group, const struct cli_command *table, size_t n,
                  int argc, char **argv);
void cli_group_help(FILE *f, const char *group, const struct cli_command *table, size_t n);

/* The groups, one per file. */
int cli_sandbox_main(struct cli *c, int argc, char **argv);
int cli_token_main(struct cli *c, int argc, char **argv);
int cli_workspace_main(struct cli *c, int argc, char **argv);
int cli_login_main(struct cli *c, int argc, char **argv);
/* skiff sandbox cp (cli_cp.c). */
int cli_sandbox_cp(struct cli *c, int argc, char **argv);
/* skiff sandbox shell (cli_shell.c). */
int cli_sandbox_shell(struct cli *c, int argc, char **argv);
/* skiff sandbox logs (cli_logs.c). */
int cli_sandbox_logs(struct cli *c, int argc, char **argv);
/* Print the output at base (/v1/sandboxes/ID/logs or …/execs/EX/output) from its start: the
 * streams in mask, stdout to stdout and stderr to stderr, as they come. With follow, until the
 * writer ends (resuming after a cut), and *ret_exit_code is its exit code (-1: it has none);
 * without, what was written so far (*ret_exit_code -1 unless it ended). -EINTR after a signal. */
#define CLI_OUT_STDOUT 1u
#define CLI_OUT_STDERR 2u
int cli_output_stream(struct cli *c, const char *base, unsigned mask, bool follow,
                      int *ret_exit_code, struct sk_error *err);

/* skiff image (cli_image.c). */
int cli_image_main(struct cli *c, int argc, char **argv);

/* ---- blobs for image builds (cli_blob.c) ---- */

/* Check that local is a directory or a regular file (following a link): -SK_EINVAL_SPEC if not,
 * so a build with a missing path stops before anything is uploaded. */
int cli_tar_check(const char *local, struct sk_error *err);
/* Write local as a deterministic ustar archive to out_fd: a directory's contents at the
 * archive's root, or a file as the one entry as_name. *ret_hex is the archive's SHA-256,
 * *ret_size its length; both untouched on failure. Bad input is -SK_EINVAL_SPEC. */
int cli_tar_pack(const char *local, const char *as_name, int out_fd, char ret_hex[65],
                 uint64_t *ret_size, struct sk_error *err);
/* A blob made ready for upload: its bytes in an unlinked temporary file, hashed. Everything a
 * build uploads is made first, so bad input found anywhere in any tree uploads nothing. */
struct cli_blob {
	int fd; /* -1: none */
	uint64_t size;
	char hex[65];
};
void cli_blob_release(struct cli_blob *b);
/* Pack local (as cli_tar_pack) into a temporary file. */
int cli_blob_pack(const char *local, const char *as_name, struct cli_blob *ret,
                  struct sk_error *err);
/* Copy the file as it is (an OCI archive) into a temporary file: the upload is that copy, so
 * the file changing or shrinking meanwhile cannot make its bytes differ from the digest. */
int cli_blob_copy_file(const char *file, struct cli_blob *ret, struct sk_error *err);
/* Upload b unless the server has it; *ret_put says whether it was sent. */
int cli_blob_upload(struct cli *c, const struct cli_blob *b, bool *ret_put, struct sk_error *err);

/* ---- configuration (cli_client.c) ---- */

/* The config file's path ($XDG_CONFIG_HOME/skiff/config.json or ~/.config/skiff/config.json). */
int cli_config_path(char **ret_dir, char **ret_path, struct sk_error *err);
/* Check that url is http(s)://… and return a copy without trailing slashes. */
int cli_url_normalize(const char *url, char **ret, struct sk_error *err);
/* Resolve c->url if not yet: --url > $SKIFF_URL > the config file's > CLI_DEFAULT_URL. */
int cli_url_resolve(struct cli *c, struct sk_error *err);
/* Check that a token can go into a header (printable ASCII, no spaces, bounded length). */
int cli_token_check(const char *token, struct sk_error *err);

/* ---- HTTP (cli_client.c) ---- */

/* Send method path (which starts with "/v1/…" and carries its query, already escaped) with body
 * (may be NULL) as JSON; timeout_s bounds the whole request (CLI_NO_TIMEOUT for none). On a 2xx
 * reply *ret is the parsed body (NULL when empty); on anything else err holds the server's message
 * (-EAGAIN for a 503).
 * Resolves the URL and token on first use. */
int cli_http(struct cli *c, const char *method, const char *path, json_t *body, long timeout_s,
             json_t **ret, struct sk_error *err);
/* Like cli_http with raw bytes both ways (body may be NULL): on a 2xx reply *ret is the reply's
 * bytes (malloc'd, NUL-terminated, NULL when empty) and *ret_len their count. */
struct cli_output_meta {
	long long offset; /* X-Skiff-Offset: where the bytes start; -1 when absent */
	int eof;          /* X-Skiff-Eof: 1, 0, or -1 when absent */
};
int cli_http_raw(struct cli *c, const char *method, const char *path, const void *body, size_t len,
                 long timeout_s, char **ret, size_t *ret_len, struct cli_output_meta *ret_meta,
                 struct sk_error *err);
/* Where cli_http_stream puts a 2xx reply's body, as it arrives: on_data returns 0 to go on, or
 * -1 to stop the request (which then fails with -ECANCELED; the reader says why). */
struct cli_sink {
	int (*on_data)(const char *p, size_t n, void *ud);
	void *ud;
};
/* HEAD path: *ret_status is the reply's status, whatever it is (err only for no reply). */
int cli_http_head(struct cli *c, const char *path, long *ret_status, struct sk_error *err);
/* GET path (no time limit: for streamed replies) with the body going to sink. A non-2xx reply is
 * an error (-EAGAIN for a 503: try again later); so is a transport failure. */
int cli_http_stream(struct cli *c, const char *path, const struct cli_sink *sink,
                    struct sk_error *err);
/* GET path and every page after it (following next_cursor); *ret is one array of all items. */
int cli_list_all(struct cli *c, const char *path, json_t **ret, struct sk_error *err);

/* Percent-encode s for a path segment or query value; returns a malloc'd string or NULL. */
char *cli_escape(const char *s);
/* Append "?key=value" or "&key=value" (value escaped) to the path held by f. */
void cli_query_put(FILE *f, bool *first, const char *key, const char *value);

/* ---- signals (cli_client.c) ---- */

/* SIGINT and SIGTERM set a counter instead of ending the process, so `sandbox run` can clean up;
 * a request in flight ends once the counter reaches c->abort_after_signals. */
void cli_signals_install(void);
/* The number of the last signal caught, or 0; how many were caught. */
int cli_signal_caught(void);
int cli_signal_count(void);

/* ---- options and input (cli_client.c) ---- */

/* Report an unknown option or a missing value from getopt_long's return opt ('?' or ':', with
 * optstring starting with ':'); returns EXIT_USAGE. */
int cli_option_error(const char *cmd, const char *usage, int opt, char **argv);
/* Print "skiff: <message>" and "usage: skiff <cmd> <usage>" to stderr; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *usage, const char *fmt, ...) _printf_(3, 4);
/* Report err once; returns 1. */
int cli_fail(const struct sk_error *err);

/* Split argv at the first "--": returns how many arguments come before it, and what follows in
 * *ret_cmd / *ret_ncmd (NULL / 0 when there is no "--"). */
int cli_split_dashdash(int argc, char **argv, char ***ret_cmd, int *ret_ncmd);
/* Parse "KEY<sep>VALUE" into obj[KEY] = VALUE. what names the option in errors. */
int cli_parse_pair(const char *s, char sep, const char *what, json_t *obj, struct sk_error *err);
/* Parse a number for option what: a positive integer / a positive real number. */
int cli_parse_int(const char *s, const char *what, long long min, long long max, long long *ret,
                  struct sk_error *err);
int cli_parse_real(const char *s, const char *what, double min, double max, double *ret,
                   struct sk_error *err);
/* An array of strings from argv. */
json_t *cli_json_argv(int argc, char **argv);

/* ---- output (cli_client.c) ---- */

/* Print v as indented JSON and a newline. */
void cli_print_json(const json_t *v);
/* obj[key] as display text: strings as they are, null as "-", others compact JSON; malloc'd. */
char *cli_value_text(const json_t *obj, const char *key);
/* obj[key] when it is a string, else NULL. */
const char *cli_json_str(const json_t *obj, const char *key);
/* Print s with control characters replaced, so a server's text cannot drive the terminal. */
void cli_print_safe(FILE *f, const char *s);

struct cli_column {
	const char *header;
	const char *key;
	bool bytes; /* an integer number of bytes, shown as 1.5 KiB, 203.4 MiB, ... */
};
/* Print items (an array of objects) as aligned columns under a header line. */
void cli_print_table(const json_t *items, const struct cli_column *cols, size_t ncols);
/* Parse a command line whose only option is --json; returns 0 or the exit status to return. */
int cli_parse_json_flag(const char *cmd, const char *usage, int argc, char **argv, bool *json);
/* `skiff <group> ls [--json]`: every item of path (cursors followed), as a table of cols or as
 * a JSON array. */
int cli_list_command(struct cli *c, const char *cmd, const char *usage, int argc, char **argv,
                     const char *path, const struct cli_column *cols, size_t ncols);
/* The one positional argument left after getopt (what it is: "the sandbox ID"); NULL after
 * reporting a missing or extra one, *ret_status then the exit status. */
const char *cli_one_arg(const char *cmd, const char *usage, const char *what, int argc, char **argv,
                        int *ret_status);
/* `skiff <group> rm ID...`: DELETE collection/ID for each; 1 if any failed. */
int cli_rm_command(struct cli *c, const char *cmd, const char *usage, const char *what, int argc,
                   char **argv, const char *collection);
/* Print an object as "key: value" lines. */
void cli_print_fields(const json_t *obj);

#define _cleanup_json_ _cleanup_(json_decrefp) /* jansson's: NULL is fine */

static inline void fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)
