/* skiff workspace: create, ls (admin tokens). */
#include "cli.h"

#include <string.h>

#define CREATE_USAGE "NAME [--json]"
#define LS_USAGE     "[--json]"

static int workspace_create(struct cli *c, int argc, char **argv)
{
	bool json = false;
	int st = cli_parse_json_flag("workspace create", CREATE_USAGE, argc, argv, &json);
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
	    {.header = "ID", .key = "id"},
	    {.header = "NAME", .key = "name"},
	    {.header = "CREATED", .key = "created_at"},
	};
	return cli_list_command(c, "workspace ls", LS_USAGE, argc, argv, "/v1/workspaces", cols,
	                        ARRAY_SIZE(cols));
}

static const struct cli_command commands[] = {
    {"create", workspace_create, CREATE_USAGE, "create a workspace; print its id"},
    {"ls", workspace_ls, LS_USAGE, "list workspaces"},
};

int cli_workspace_main(struct cli *c, int argc, char **argv)
{
	return cli_group_run(c, "workspace", commands, ARRAY_SIZE(commands), argc, argv);
}
