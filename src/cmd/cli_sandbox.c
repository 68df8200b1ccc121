/* skiff sandbox: create, ls, show, exec, run, wait, rm, ports. */
#include "cli.h"

#include <string.h>

#include "../lib/encoding.h"

#define SANDBOX_MAX_CPU       1024.0
#define SANDBOX_MAX_MIB       (1LL << 24) /* 16 TiB: past any machine, still a sane number */
#define SANDBOX_MAX_PIDS      (1LL << 22) /* the kernel's pid_max limit */
#define SANDBOX_MAX_TIMEOUT_S 86400.0     /* the API's maximum */
#define WAIT_CHUNK_S          300.0       /* one wait request; `sandbox wait` repeats them */

enum {
	OPT_IMAGE = 256,
	OPT_CPU,
	OPT_MEMORY,
	OPT_DISK,
	OPT_PIDS,
	OPT_TIMEOUT,
	OPT_IDLE_TIMEOUT,
	OPT_NAME,
	OPT_TAG,
	OPT_ENV,
	OPT_WORKDIR,
	OPT_JSON,
	OPT_STATE,
	OPT_PORT,
	OPT_NETWORK,
	OPT_ALLOW,
};

#define CREATE_OPTIONS                                                                             \
	"[--image I] [--cpu N] [--memory MIB] [--disk MIB] [--pids N] [--timeout S] "              \
	"[--idle-timeout S] [--name N] [--tag K=V]... [--env K=V]... [--workdir D] [--port P]... " \
	"[--network none|egress] [--allow CIDR]..."
#define CREATE_USAGE "" CREATE_OPTIONS " [--json] [-- CMD...]"
#define RUN_USAGE    "" CREATE_OPTIONS " -- CMD..."
#define LS_USAGE     "[--state S] [--tag K:V]... [--name N] [--json]"
#define SHOW_USAGE   "ID [--json]"
#define EXEC_USAGE   "ID [--env K=V]... [--workdir D] [--timeout S] -- CMD..."
#define WAIT_USAGE   "ID [--timeout S]"
#define RM_USAGE     "ID..."
#define PORTS_USAGE  "ID [--json]"
#define SNAP_USAGE   "ID [--name N]"

static const struct option create_options[] = {
    {"image", required_argument, NULL, OPT_IMAGE},
    {"cpu", required_argument, NULL, OPT_CPU},
    {"memory", required_argument, NULL, OPT_MEMORY},
    {"disk", required_argument, NULL, OPT_DISK},
    {"pids", required_argument, NULL, OPT_PIDS},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
    {"name", required_argument, NULL, OPT_NAME},
    {"tag", required_argument, NULL, OPT_TAG},
    {"env", required_argument, NULL, OPT_ENV},
    {"workdir", required_argument, NULL, OPT_WORKDIR},
    {"port", required_argument, NULL, OPT_PORT},
    {"network", required_argument, NULL, OPT_NETWORK},
    {"allow", required_argument, NULL, OPT_ALLOW},
    {"json", no_argument, NULL, OPT_JSON},
    {NULL, 0, NULL, 0},
};

/* What create's options say: the request body, and env/workdir kept apart because `run` gives them
 * to the exec rather than to the sandbox. */
struct create_args {
	json_t *body;
	json_t *env;
	const char *workdir;
	double timeout_s; /* 0: the server's default */
	bool json;
	char **cmd; /* after "--" */
	int ncmd;
};

static void create_args_release(struct create_args *a)
{
	json_decref(a->body);
	json_decref(a->env);
}

/* A JSON number for a duration: an integer when it is one, so the body reads naturally. */
static json_t *json_seconds(double s)
{
	return s == (double)(json_int_t)s ? json_integer((json_int_t)s) : json_real(s);
}

/* The whole request's limit for a server-side wait of wait_s seconds (0: none). */
static long request_timeout_for(double wait_s)
{
	return wait_s > 0 ? (long)wait_s + 1 + CLI_WAIT_MARGIN_S : CLI_NO_TIMEOUT;
}

/* Parse create's options (shared by create and run). Returns 0 or the exit status to return. */
static int create_parse(const char *cmd, const char *usage, int argc, char **argv,
                        struct create_args *a)
{
	struct sk_error err = {0};
	int nopts = cli_split_dashdash(argc, argv, &a->cmd, &a->ncmd);
	a->body = json_object();
	a->env = json_object();
	if (!a->body || !a->env)
		return cli_fail(&(struct sk_error){.msg = "out of memory"});
	int opt, r = 0;
	opterr = 0;
	while ((opt = getopt_long(nopts, argv, ":", create_options, NULL)) != -1) {
		long long n;
		double d;
		switch (opt) {
		case OPT_IMAGE:
			r = json_object_set_new(a->body, "image", json_string(optarg)) < 0
			        ? sk_error_set(&err, -SK_EINVAL_SPEC, "--image: not valid UTF-8")
			        : 0;
			break;
		case OPT_NAME:
			r = json_object_set_new(a->body, "name", json_string(optarg)) < 0
			        ? sk_error_set(&err, -SK_EINVAL_SPEC, "--name: not valid UTF-8")
			        : 0;
			break;
		case OPT_CPU:
			r = cli_parse_real(optarg, "--cpu", 0.001, SANDBOX_MAX_CPU, &d, &err);
			if (r == 0)
				json_object_set_new(a->body, "cpu", json_real(d));
			break;
		case OPT_MEMORY:
			r = cli_parse_int(optarg, "--memory", 1, SANDBOX_MAX_MIB, &n, &err);
			if (r == 0)
				json_object_set_new(a->body, "memory_mib", json_integer(n));
			break;
		case OPT_DISK:
			r = cli_parse_int(optarg, "--disk", 1, SANDBOX_MAX_MIB, &n, &err);
			if (r == 0)
				json_object_set_new(a->body, "disk_mib", json_integer(n));
			break;
		case OPT_PIDS:
			r = cli_parse_int(optarg, "--pids", 1, SANDBOX_MAX_PIDS, &n, &err);
			if (r == 0)
				json_object_set_new(a->body, "pids", json_integer(n));
			break;
		case OPT_TIMEOUT:
			r = cli_parse_real(optarg, "--timeout", 0.001, SANDBOX_MAX_TIMEOUT_S,
			                   &a->timeout_s, &err);
			if (r == 0)
				json_object_set_new(a->body, "timeout_s",
				                    json_seconds(a->timeout_s));
			break;
		case OPT_IDLE_TIMEOUT: {
			double idle;
			r = cli_parse_real(optarg, "--idle-timeout", 0.001, SANDBOX_MAX_TIMEOUT_S,
			                   &idle, &err);
			if (r == 0)
				json_object_set_new(a->body, "idle_timeout_s", json_seconds(idle));
			break;
		}
		case OPT_TAG: {
			json_t *tags = json_object_get(a->body, "tags");
			if (!tags) {
				tags = json_object();
				json_object_set_new(a->body, "tags", tags);
			}
			r = cli_parse_pair(optarg, '=', "--tag", tags, &err);
			break;
		}
		case OPT_PORT: {
			json_t *ports = json_object_get(a->body, "ports");
			if (!ports) {
				ports = json_array();
				json_object_set_new(a->body, "ports", ports);
			}
			/* The server checks the rest (how many, no twice). */
			r = cli_parse_int(optarg, "--port", 1, 65535, &n, &err);
			if (r == 0)
				json_array_append_new(ports, json_integer(n));
			break;
		}
		case OPT_NETWORK:
			r = strcmp(optarg, "none") && strcmp(optarg, "egress")
			        ? sk_error_set(&err, -SK_EINVAL_SPEC,
			                       "--network: expected none or egress, got '%s'",
			                       optarg)
			        : json_object_set_new(a->body, "network", json_string(optarg));
			break;
		case OPT_ALLOW: {
			/* The server checks each range; --allow alone implies egress. */
			json_t *allow = json_object_get(a->body, "cidr_allowlist");
			if (!allow) {
				allow = json_array();
				json_object_set_new(a->body, "cidr_allowlist", allow);
			}
			if (!json_object_get(a->body, "network"))
				json_object_set_new(a->body, "network", json_string("egress"));
			r = json_array_append_new(allow, json_string(optarg)) < 0
			        ? sk_error_set(&err, -SK_EINVAL_SPEC, "--allow: not valid UTF-8")
			        : 0;
			break;
		}
		case OPT_ENV: r = cli_parse_pair(optarg, '=', "--env", a->env, &err); break;
		case OPT_WORKDIR: a->workdir = optarg; break;
		case OPT_JSON: a->json = true; break;
		default: return cli_option_error(cmd, usage, opt, argv);
		}
		if (r < 0)
			return cli_usage_error(cmd, usage, "%s", err.msg);
	}
	if (optind < nopts)
		return cli_usage_error(cmd, usage,
		                       "unexpected argument '%s': the command goes after --",
		                       argv[optind]);
	return 0;
}

/* Parse options that take no value or one of the given long options; collect positionals. Used by
 * the commands with few options. */
static int simple_parse(const char *cmd, const char *usage, int argc, char **argv,
                        const struct option *options, int (*on_opt)(int opt, void *ud), void *ud)
{
	int opt;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1) {
		if (opt == '?' || opt == ':')
			return cli_option_error(cmd, usage, opt, argv);
		int r = on_opt(opt, ud);
		if (r)
			return r;
	}
	return 0;
}

/* POST the create body; *ret_sandbox is the new sandbox. */
static int sandbox_post(struct cli *c, json_t *body, json_t **ret_sandbox, struct sk_error *err)
{
	json_t *sb = NULL;
	int r = cli_http(c, "POST", "/v1/sandboxes", body, CLI_REQUEST_TIMEOUT_S, &sb, err);
	if (r < 0)
		return r;
	if (!cli_json_str(sb, "id")) {
		json_decref(sb);
		return sk_error_set(err, -EPROTO, "create sandbox: reply has no id");
	}
	*ret_sandbox = sb;
	return 0;
}

static int sandbox_create(struct cli *c, int argc, char **argv)
{
	_cleanup_(create_args_release) struct create_args a = {0};
	int st = create_parse("sandbox create", CREATE_USAGE, argc, argv, &a);
	if (st)
		return st;
	if (a.ncmd > 0)
		json_object_set_new(a.body, "command", cli_json_argv(a.ncmd, a.cmd));
	if (json_object_size(a.env))
		json_object_set(a.body, "env", a.env);
	if (a.workdir)
		json_object_set_new(a.body, "workdir", json_string(a.workdir));

	struct sk_error err = {0};
	_cleanup_json_ json_t *sb = NULL;
	if (sandbox_post(c, a.body, &sb, &err) < 0)
		return cli_fail(&err);
	if (a.json)
		cli_print_json(sb);
	else
		printf("%s\n", cli_json_str(sb, "id"));
	return 0;
}

/* ---- ls and show ---- */

struct ls_args {
	FILE *path; /* the path being built, with its query */
	bool first;
	bool json;
	struct sk_error err;
};

static int ls_on_opt(int opt, void *ud)
{
	struct ls_args *a = ud;
	switch (opt) {
	case OPT_STATE: cli_query_put(a->path, &a->first, "state", optarg); break;
	case OPT_NAME: cli_query_put(a->path, &a->first, "name", optarg); break;
	case OPT_TAG: {
		const char *colon = strchr(optarg, ':');
		if (!colon || colon == optarg)
			return cli_usage_error("sandbox ls", LS_USAGE,
			                       "--tag '%s': expected KEY:VALUE", optarg);
		cli_query_put(a->path, &a->first, "tag", optarg);
		break;
	}
	case OPT_JSON: a->json = true; break;
	}
	return 0;
}

static int sandbox_ls(struct cli *c, int argc, char **argv)
{
	static const struct option options[] = {
	    {"state", required_argument, NULL, OPT_STATE},
	    {"tag", required_argument, NULL, OPT_TAG},
	    {"name", required_argument, NULL, OPT_NAME},
	    {"json", no_argument, NULL, OPT_JSON},
	    {NULL, 0, NULL, 0},
	};
	static const struct cli_column cols[] = {
	    {.header = "ID", .key = "id"},       {.header = "NAME", .key = "name"},
	    {.header = "STATE", .key = "state"}, {.header = "EXIT", .key = "exit_code"},
	    {.header = "IMAGE", .key = "image"}, {.header = "CREATED", .key = "created_at"},
	};
	_cleanup_free_ char *path = NULL;
	size_t pathlen;
	struct ls_args a = {.first = true};
	a.path = open_memstream(&path, &pathlen);
	if (!a.path)
		return cli_fail(&(struct sk_error){.msg = "out of memory"});
	fputs("/v1/sandboxes", a.path);
	int st = simple_parse("sandbox ls", LS_USAGE, argc, argv, options, ls_on_opt, &a);
	fclose(a.path);
	if (st)
		return st;
	if (optind < argc)
		return cli_usage_error("sandbox ls", LS_USAGE, "unexpected argument '%s'",
		                       argv[optind]);

	_cleanup_json_ json_t *items = NULL;
	if (cli_list_all(c, path, &items, &a.err) < 0)
		return cli_fail(&a.err);
	if (a.json)
		cli_print_json(items);
	else
		cli_print_table(items, cols, ARRAY_SIZE(cols));
	return 0;
}

static int json_on_opt(int opt, void *ud)
{
	if (opt == OPT_JSON)
		*(bool *)ud = true;
	return 0;
}

static const struct option json_options[] = {
    {"json", no_argument, NULL, OPT_JSON},
    {NULL, 0, NULL, 0},
};

/* "/v1/sandboxes/<id escaped><rest>" */
static char *sandbox_path(const char *id, const char *rest)
{
	_cleanup_free_ char *esc = cli_escape(id);
	char *p = NULL;
	if (!esc || asprintf(&p, "/v1/sandboxes/%s%s", esc, rest) < 0)
		return NULL;
	return p;
}

static int sandbox_show(struct cli *c, int argc, char **argv)
{
	bool json = false;
	int st =
	    simple_parse("sandbox show", SHOW_USAGE, argc, argv, json_options, json_on_opt, &json);
	if (st)
		return st;
	const char *id = cli_one_arg("sandbox show", SHOW_USAGE, "the sandbox ID", argc, argv, &st);
	if (!id)
		return st;
	struct sk_error err = {0};
	_cleanup_free_ char *path = sandbox_path(id, "");
	_cleanup_json_ json_t *sb = NULL;
	if (!path)
		return cli_fail(&(struct sk_error){.msg = "out of memory"});
	if (cli_http(c, "GET", path, NULL, CLI_REQUEST_TIMEOUT_S, &sb, &err) < 0)
		return cli_fail(&err);
	if (json)
		cli_print_json(sb);
	else
		cli_print_fields(sb);
	return 0;
}

/* ---- exec and run ---- */

/* Start the exec body in sandbox id and print its output as it comes; returns its exit status
 * (1 when it has none), or a negative code in err. */
static int exec_stream(struct cli *c, const char *id, json_t *body, struct sk_error *err)
{
	_cleanup_free_ char *path = sandbox_path(id, "/exec");
	_cleanup_json_ json_t *ex = NULL;
	if (!path)
		return sk_error_errno(err, -ENOMEM, "exec");
	int r = cli_http(c, "POST", path, body, CLI_REQUEST_TIMEOUT_S, &ex, err);
	if (r < 0)
		return r;
	const char *exid = cli_json_str(ex, "id");
	_cleanup_free_ char *eex = exid ? cli_escape(exid) : NULL;
	_cleanup_free_ char *tail = NULL, *base = NULL;
	if (!exid)
		return sk_error_set(err, -EPROTO, "the server's reply has no exec id");
	if (!eex || asprintf(&tail, "/execs/%s/output", eex) < 0 ||
	    !(base = sandbox_path(id, tail)))
		return sk_error_errno(err, -ENOMEM, "exec");
	int code;
	r = cli_output_stream(c, base, CLI_OUT_STDOUT | CLI_OUT_STDERR, true, &code, err);
	if (r < 0)
		return r;
	if (code >= 0 && code <= 255)
		return code;
	fprintf(stderr, "skiff: exec %s ended without an exit code\n", exid);
	return 1;
}

struct exec_args {
	json_t *env;
	const char *workdir;
	double timeout_s;
	struct sk_error err;
};

static int exec_on_opt(int opt, void *ud)
{
	struct exec_args *a = ud;
	int r = 0;
	switch (opt) {
	case OPT_ENV: r = cli_parse_pair(optarg, '=', "--env", a->env, &a->err); break;
	case OPT_WORKDIR: a->workdir = optarg; break;
	case OPT_TIMEOUT:
		r = cli_parse_real(optarg, "--timeout", 0.001, SANDBOX_MAX_TIMEOUT_S, &a->timeout_s,
		                   &a->err);
		break;
	}
	return r < 0 ? cli_usage_error("sandbox exec", EXEC_USAGE, "%s", a->err.msg) : 0;
}

static int sandbox_exec(struct cli *c, int argc, char **argv)
{
	static const struct option options[] = {
	    {"env", required_argument, NULL, OPT_ENV},
	    {"workdir", required_argument, NULL, OPT_WORKDIR},
	    {"timeout", required_argument, NULL, OPT_TIMEOUT},
	    {NULL, 0, NULL, 0},
	};
	char **cmd;
	int ncmd;
	int nopts = cli_split_dashdash(argc, argv, &cmd, &ncmd);
	_cleanup_json_ json_t *env = json_object();
	struct exec_args a = {.env = env};
	int st = simple_parse("sandbox exec", EXEC_USAGE, nopts, argv, options, exec_on_opt, &a);
	if (st)
		return st;
	const char *id =
	    cli_one_arg("sandbox exec", EXEC_USAGE, "the sandbox ID", nopts, argv, &st);
	if (!id)
		return st;
	if (ncmd == 0)
		return cli_usage_error("sandbox exec", EXEC_USAGE, "give the command after --");

	_cleanup_json_ json_t *body = json_object();
	json_object_set_new(body, "command", cli_json_argv(ncmd, cmd));
	if (json_object_size(env))
		json_object_set(body, "env", env);
	if (a.workdir)
		json_object_set_new(body, "workdir", json_string(a.workdir));
	if (a.timeout_s > 0)
		json_object_set_new(body, "timeout_s", json_seconds(a.timeout_s));
	cli_signals_install();
	c->abort_after_signals = 1;
	st = exec_stream(c, id, body, &a.err);
	if (st < 0)
		return cli_signal_count() ? 128 + cli_signal_caught() : cli_fail(&a.err);
	return st;
}

/* DELETE one sandbox; *ret (if not NULL) is its final state. */
static int sandbox_delete(struct cli *c, const char *id, json_t **ret, struct sk_error *err)
{
	_cleanup_free_ char *path = sandbox_path(id, "");
	_cleanup_json_ json_t *sb = NULL;
	if (!path)
		return sk_error_errno(err, -ENOMEM, "delete");
	int r = cli_http(c, "DELETE", path, NULL, CLI_REQUEST_TIMEOUT_S, &sb, err);
	if (r < 0)
		return r;
	if (ret)
		*ret = TAKE_PTR(sb);
	return 0;
}

/* Create an idle sandbox, run the command in it, remove it whatever happened. A first SIGINT or
 * SIGTERM during the create waits for the sandbox's id (so it can be removed); during the exec it
 * ends the wait at once. */
static int sandbox_run(struct cli *c, int argc, char **argv)
{
	_cleanup_(create_args_release) struct create_args a = {0};
	int st = create_parse("sandbox run", RUN_USAGE, argc, argv, &a);
	if (st)
		return st;
	if (a.ncmd == 0)
		return cli_usage_error("sandbox run", RUN_USAGE, "give the command after --");
	if (a.json)
		return cli_usage_error("sandbox run", RUN_USAGE, "--json applies to create only");

	cli_signals_install();
	struct sk_error err = {0};
	_cleanup_json_ json_t *sb = NULL;
	c->abort_after_signals = 2;
	if (sandbox_post(c, a.body, &sb, &err) < 0) {
		if (cli_signal_caught())
			return 128 + cli_signal_caught();
		return cli_fail(&err);
	}
	const char *id = cli_json_str(sb, "id");

	if (cli_signal_caught()) {
		st = 128 + cli_signal_caught();
	} else {
		_cleanup_json_ json_t *body = json_object();
		json_object_set_new(body, "command", cli_json_argv(a.ncmd, a.cmd));
		if (json_object_size(a.env))
			json_object_set(body, "env", a.env);
		if (a.workdir)
			json_object_set_new(body, "workdir", json_string(a.workdir));
		c->abort_after_signals = 1;
		st = exec_stream(c, id, body, &err);
		if (st < 0)
			st = cli_signal_caught() ? 128 + cli_signal_caught() : cli_fail(&err);
	}

	/* Cleanup goes on through one more signal: only the next one gives up on it. */
	c->abort_after_signals = cli_signal_count() + 2;
	if (sandbox_delete(c, id, NULL, &err) < 0) {
		fprintf(stderr, "skiff: could not remove sandbox %s: ", id);
		cli_print_safe(stderr, err.msg);
		fprintf(stderr, "\nskiff: remove it with 'skiff sandbox rm %s'\n", id);
		if (st == 0)
			st = 1;
	}
	return st;
}

/* ---- wait and rm ---- */

static bool state_ended(const char *state)
{
	return state && strcmp(state, "pending") != 0 && strcmp(state, "running") != 0;
}

static int timeout_on_opt(int opt, void *ud)
{
	struct exec_args *a = ud;
	if (opt == OPT_TIMEOUT && cli_parse_real(optarg, "--timeout", 0.001, SANDBOX_MAX_TIMEOUT_S,
	                                         &a->timeout_s, &a->err) < 0)
		return cli_usage_error("sandbox wait", WAIT_USAGE, "%s", a->err.msg);
	return 0;
}

static int sandbox_wait(struct cli *c, int argc, char **argv)
{
	static const struct option options[] = {
	    {"timeout", required_argument, NULL, OPT_TIMEOUT},
	    {NULL, 0, NULL, 0},
	};
	struct exec_args a = {0};
	int st = simple_parse("sandbox wait", WAIT_USAGE, argc, argv, options, timeout_on_opt, &a);
	if (st)
		return st;
	const char *id = cli_one_arg("sandbox wait", WAIT_USAGE, "the sandbox ID", argc, argv, &st);
	if (!id)
		return st;

	/* Without --timeout, wait in chunks forever; with it, until it has passed. */
	double left = a.timeout_s;
	for (;;) {
		double chunk = a.timeout_s > 0 && left < WAIT_CHUNK_S ? left : WAIT_CHUNK_S;
		char rest[64];
		snprintf(rest, sizeof(rest), "/wait?timeout_s=%g", chunk);
		_cleanup_free_ char *path = sandbox_path(id, rest);
		_cleanup_json_ json_t *sb = NULL;
		if (!path)
			return cli_fail(&(struct sk_error){.msg = "out of memory"});
		if (cli_http(c, "POST", path, NULL, request_timeout_for(chunk), &sb, &a.err) < 0)
			return cli_fail(&a.err);
		const char *state = cli_json_str(sb, "state");
		if (state_ended(state)) {
			cli_print_safe(stdout, state);
			fputc('\n', stdout);
			const json_t *code = json_object_get(sb, "exit_code");
			if (!json_is_integer(code))
				return 1;
			json_int_t v = json_integer_value(code);
			return v >= 0 && v <= 255 ? (int)v : 1;
		}
		left -= chunk;
		if (a.timeout_s > 0 && left <= 0) {
			fprintf(stderr, "skiff: sandbox %s is still %s after %g s\n", id,
			        state ? state : "?", a.timeout_s);
			return 1;
		}
	}
}

static int no_opt(int opt, void *ud)
{
	(void)opt, (void)ud;
	return 0;
}

static int sandbox_rm(struct cli *c, int argc, char **argv)
{
	static const struct option options[] = {{NULL, 0, NULL, 0}};
	int st = simple_parse("sandbox rm", RM_USAGE, argc, argv, options, no_opt, NULL);
	if (st)
		return st;
	if (optind >= argc)
		return cli_usage_error("sandbox rm", RM_USAGE, "missing the sandbox ID");
	for (int i = optind; i < argc; i++) {
		struct sk_error err = {0};
		if (sandbox_delete(c, argv[i], NULL, &err) < 0)
			st = cli_fail(&err);
		else
			printf("%s\n", argv[i]);
	}
	return st;
}

/* ---- ports ---- */

/* ---- snapshot ---- */

static int name_on_opt(int opt, void *ud)
{
	if (opt == OPT_NAME)
		*(const char **)ud = optarg;
	return 0;
}

static int sandbox_snapshot(struct cli *c, int argc, char **argv)
{
	static const struct option options[] = {
	    {"name", required_argument, NULL, OPT_NAME},
	    {NULL, 0, NULL, 0},
	};
	const char *name = NULL;
	int st =
	    simple_parse("sandbox snapshot", SNAP_USAGE, argc, argv, options, name_on_opt, &name);
	if (st)
		return st;
	const char *id =
	    cli_one_arg("sandbox snapshot", SNAP_USAGE, "the sandbox ID", argc, argv, &st);
	if (!id)
		return st;
	struct sk_error err = {0};
	_cleanup_json_ json_t *body = json_object(), *im = NULL;
	if (name && json_object_set_new(body, "name", json_string(name)) < 0)
		return cli_usage_error("sandbox snapshot", SNAP_USAGE, "--name: not valid UTF-8");
	_cleanup_free_ char *path = sandbox_path(id, "/snapshot");
	if (!path)
		return cli_fail(&(struct sk_error){.msg = "out of memory"});
	if (cli_http(c, "POST", path, body, CLI_REQUEST_TIMEOUT_S, &im, &err) < 0)
		return cli_fail(&err);
	const char *iid = cli_json_str(im, "id");
	if (!iid)
		return cli_fail(&(struct sk_error){.msg = "snapshot: the reply has no image id"});
	printf("%s\n", iid);
	return 0;
}

static int sandbox_ports(struct cli *c, int argc, char **argv)
{
	bool json = false;
	int st = simple_parse("sandbox ports", PORTS_USAGE, argc, argv, json_options, json_on_opt,
	                      &json);
	if (st)
		return st;
	const char *id =
	    cli_one_arg("sandbox ports", PORTS_USAGE, "the sandbox ID", argc, argv, &st);
	if (!id)
		return st;
	struct sk_error err = {0};
	_cleanup_free_ char *path = sandbox_path(id, "/ports");
	_cleanup_json_ json_t *reply = NULL;
	if (!path)
		return cli_fail(&(struct sk_error){.msg = "out of memory"});
	if (cli_http(c, "GET", path, NULL, CLI_REQUEST_TIMEOUT_S, &reply, &err) < 0 ||
	    cli_url_resolve(c, &err) < 0)
		return cli_fail(&err);
	json_t *ports = json_object_get(reply, "ports");
	if (!json_is_array(ports))
		return cli_fail(&(struct sk_error){.msg = "the reply has no ports"});
	/* Whole URLs: what a client (with the token) calls. */
	size_t i;
	json_t *p;
	json_array_foreach (ports, i, p) {
		const char *url = cli_json_str(p, "url");
		_cleanup_free_ char *full = NULL;
		if (url && asprintf(&full, "%s%s", c->url, url) >= 0)
			json_object_set_new(p, "url", json_string(full));
	}
	static const struct cli_column cols[] = {{.header = "PORT", .key = "port"},
	                                         {.header = "URL", .key = "url"}};
	if (json)
		cli_print_json(ports);
	else
		cli_print_table(ports, cols, ARRAY_SIZE(cols));
	return 0;
}

static const struct cli_command commands[] = {
    {"create", sandbox_create, CREATE_USAGE,
     "create a sandbox (idle without a command); print its id"},
    {"ls", sandbox_ls, LS_USAGE, "list sandboxes"},
    {"show", sandbox_show, SHOW_USAGE, "show one sandbox"},
    {"exec", sandbox_exec, EXEC_USAGE, "run a command in a sandbox; exit with its status"},
    {"run", sandbox_run, RUN_USAGE,
     "create a sandbox, run a command in it, remove it; exit with the command's status"},
    {"wait", sandbox_wait, WAIT_USAGE,
     "wait for a sandbox's command to end; print the state, exit with its status"},
    {"rm", sandbox_rm, RM_USAGE, "terminate and remove sandboxes"},
    {"cp", cli_sandbox_cp, "SRC DST", "copy a file into or out of a sandbox (ID:/PATH)"},
    {"logs", cli_sandbox_logs, "[--stdout | --stderr] [--exec EX] [--follow] ID",
     "print the output of a sandbox's command, or of one exec"},
    {"shell", cli_sandbox_shell, "ID [-- CMD...]",
     "an interactive terminal in a sandbox (default: sh)"},
    {"snapshot", sandbox_snapshot, SNAP_USAGE,
     "save a running sandbox's files as a new image; print its id"},
    {"ports", sandbox_ports, PORTS_USAGE,
     "list the ports a sandbox serves, with the URL that reaches each (with a token)"},
};

int cli_sandbox_main(struct cli *c, int argc, char **argv)
{
	return cli_group_run(c, "sandbox", commands, ARRAY_SIZE(commands), argc, argv);
}
