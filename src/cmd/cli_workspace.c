/* skiff workspace: create, ls (admin tokens). */
#include "cli.h"

#include <string.h>

#define CREATE_USAGE "NAME [--json]"
#define LS_USAGE     "[--json]"

enum { OPT_JSON = 256 };

static const struct option json_options[] = {
    {"json", no_argument, NULL, OPT_JSON},
    {NULL, 0, NULL, 0},
};

/* Parse [--json]; returns 0 or the exit status to return. */
static int parse_json_flag(const char *cmd, const char *usage, int argc, char **argv, bool *json)
{
	int opt;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":", json_options, NULL)) != -1) {
		if (opt != OPT_JSON)
			return cli_option_error(cmd, usage, opt, argv);
		*json = true;
	}
	return 0;
}

static int workspace_create(struct cli *c, int argc, char **argv)
{
	bool json = false;
	int st = parse_json_flag("workspace create", CREATE_USAGE, argc, argv, &json);
	if (st)
		return st;
	if (optind >= argc || !argv[optind][0])
		return cli_usage_error("workspace create", CREATE_USAGE, "missing the NAME");
	if (optind + 1 < argc)
		return cli_usage_error("workspace create", CREATE_USAGE, "unexpected argument '%s'",
		                       argv[optind + 1]);
	_cleanup_json_ json_t *body = json_object();
	if (json_object_set_new(body, "name", json_string(argv[optind])) < 0)
		return cli_usage_error("workspace create", CREATE_USAGE, "NAME is not valid UTF-8");
	struct sk_error err = {0};
	_cleanup_json_ json_t *ws = NULL;
	if (cli_http(c, "POST", "/v1/workspaces", body, CLI_REQUEST_TIMEOUT_S, &ws, &err) < 0)
		return cli_fail(&err);
	if (json) {
		cli_print_json(ws);
	} else {
		cli_print_safe(stdout, cli_json_str(ws, "id") ? cli_json_str(ws, "id") : "?");
		fputc('\n', stdout);
	}
	return 0;
}

static int workspace_ls(struct cli *c, int argc, char **argv)
{
	static const struct cli_column cols[] = {
	    {"ID", "id"},
	    {"NAME", "name"},
	    {"CREATED", "created_at"},
	};
	bool json = false;
	int st = parse_json_flag("workspace ls", LS_USAGE, argc, argv, &json);
	if (st)
		return st;
	if (optind < argc)
		return cli_usage_error("workspace ls", LS_USAGE, "unexpected argument '%s'",
		                       argv[optind]);
	struct sk_error err = {0};
	_cleanup_json_ json_t *items = NULL;
	if (cli_list_all(c, "/v1/workspaces", &items, &err) < 0)
		return cli_fail(&err);
	if (json)
		cli_print_json(items);
	else
		cli_print_table(items, cols, ARRAY_SIZE(cols));
	return 0;
}

static const struct cli_command commands[] = {
    {"create", workspace_create, CREATE_USAGE, "create a workspace; print its id"},
    {"ls", workspace_ls, LS_USAGE, "list workspaces"},
};

int cli_workspace_main(struct cli *c, int argc, char **argv)
{
	return cli_group_run(c, "workspace", commands, ARRAY_SIZE(commands), argc, argv);
}
