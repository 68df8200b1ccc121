/* skiff token: create, ls, rm. A token's secret is shown once, when it is created. */
#include "cli.h"

#include <string.h>

#include "../lib/clock.h"

#define TOKEN_MAX_EXPIRES_IN_S (100LL * 366 * 86400) /* a century: past it, a typo */

#define CREATE_USAGE                                                                               \
	"--name N --role R [--workspace W] [--expires-in S | --expires-at RFC3339] [--json]"
#define LS_USAGE "[--json]"
#define RM_USAGE "ID..."

enum { OPT_NAME = 256, OPT_ROLE, OPT_WORKSPACE, OPT_EXPIRES_IN, OPT_EXPIRES_AT, OPT_JSON };

static int token_create(struct cli *c, int argc, char **argv)
{
	static const struct option options[] = {
	    {"name", required_argument, NULL, OPT_NAME},
	    {"role", required_argument, NULL, OPT_ROLE},
	    {"workspace", required_argument, NULL, OPT_WORKSPACE},
	    {"expires-in", required_argument, NULL, OPT_EXPIRES_IN},
	    {"expires-at", required_argument, NULL, OPT_EXPIRES_AT},
	    {"json", no_argument, NULL, OPT_JSON},
	    {NULL, 0, NULL, 0},
	};
	const char *name = NULL, *role = NULL, *workspace = NULL, *expires_at = NULL;
	const char *expires_in = NULL;
	bool json = false;
	int opt;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1) {
		switch (opt) {
		case OPT_NAME: name = optarg; break;
		case OPT_ROLE: role = optarg; break;
		case OPT_WORKSPACE: workspace = optarg; break;
		case OPT_EXPIRES_IN: expires_in = optarg; break;
		case OPT_EXPIRES_AT: expires_at = optarg; break;
		case OPT_JSON: json = true; break;
		default: return cli_option_error("token create", CREATE_USAGE, opt, argv);
		}
	}
	if (optind < argc)
		return cli_usage_error("token create", CREATE_USAGE, "unexpected argument '%s'",
		                       argv[optind]);
	if (!name || !name[0] || !role || !role[0])
		return cli_usage_error("token create", CREATE_USAGE,
		                       "--name and --role are needed");
	if (expires_in && expires_at)
		return cli_usage_error("token create", CREATE_USAGE,
		                       "give --expires-in or --expires-at, not both");

	struct sk_error err = {0};
	char when[RFC3339_BYTES];
	if (expires_in) {
		long long s;
		if (cli_parse_int(expires_in, "--expires-in", 1, TOKEN_MAX_EXPIRES_IN_S, &s, &err) <
		    0)
			return cli_usage_error("token create", CREATE_USAGE, "%s", err.msg);
		clock_format_rfc3339(clock_now_ms() + s * 1000, when, sizeof(when));
		expires_at = when;
	} else if (expires_at) {
		int64_t ms;
		if (clock_parse_rfc3339(expires_at, &ms) < 0)
			return cli_usage_error("token create", CREATE_USAGE,
			                       "--expires-at '%s': expected RFC 3339, like "
			                       "2030-01-31T12:00:00Z",
			                       expires_at);
	}

	_cleanup_json_ json_t *body = json_object();
	if (json_object_set_new(body, "name", json_string(name)) < 0 ||
	    json_object_set_new(body, "role", json_string(role)) < 0 ||
	    (workspace && json_object_set_new(body, "workspace", json_string(workspace)) < 0) ||
	    (expires_at && json_object_set_new(body, "expires_at", json_string(expires_at)) < 0))
		return cli_usage_error("token create", CREATE_USAGE,
		                       "an option is not valid UTF-8");

	_cleanup_json_ json_t *tk = NULL;
	if (cli_http(c, "POST", "/v1/tokens", body, CLI_REQUEST_TIMEOUT_S, &tk, &err) < 0)
		return cli_fail(&err);
	const char *secret = cli_json_str(tk, "secret");
	if (!secret)
		return cli_fail(&(struct sk_error){.msg = "create token: reply has no secret"});
	if (json) {
		cli_print_json(tk);
		return 0;
	}
	printf("%s\n", secret);
	fflush(stdout);
	const char *id = cli_json_str(tk, "id");
	fputs("skiff: created token ", stderr);
	cli_print_safe(stderr, id ? id : "?");
	fputs("; its secret is shown this once: store it now\n", stderr);
	return 0;
}

static int token_ls(struct cli *c, int argc, char **argv)
{
	static const struct cli_column cols[] = {
	    {.header = "ID", .key = "id"},
	    {.header = "NAME", .key = "name"},
	    {.header = "WORKSPACE", .key = "workspace"},
	    {.header = "ROLE", .key = "role"},
	    {.header = "CREATED", .key = "created_at"},
	    {.header = "EXPIRES", .key = "expires_at"},
	};
	return cli_list_command(c, "token ls", LS_USAGE, argc, argv, "/v1/tokens", cols,
	                        ARRAY_SIZE(cols));
}

static int token_rm(struct cli *c, int argc, char **argv)
{
	return cli_rm_command(c, "token rm", RM_USAGE, "the token ID", argc, argv, "/v1/tokens");
}

static const struct cli_command commands[] = {
    {"create", token_create, CREATE_USAGE, "create a token; print its secret (shown once)"},
    {"ls", token_ls, LS_USAGE, "list tokens"},
    {"rm", token_rm, RM_USAGE, "revoke tokens"},
};

int cli_token_main(struct cli *c, int argc, char **argv)
{
	return cli_group_run(c, "token", commands, ARRAY_SIZE(commands), argc, argv);
}
