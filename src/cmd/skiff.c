/* skiff: the command-line client of skiffd's REST API. `skiff [--url URL] [--token SECRET] GROUP
 * COMMAND …`; one file per group (cli_sandbox.c, cli_token.c, …), shared code in cli_client.c. */
#include "cli.h"

#include <curl/curl.h>
#include <string.h>

static const struct {
	const char *name;
	int (*main)(struct cli *c, int argc, char **argv);
	const char *summary;
} groups[] = {
    {"image", cli_image_main, "build, list, show and remove images"},
    {"login", cli_login_main, "check a token and save it with the server's URL"},
    {"sandbox", cli_sandbox_main, "create, run commands in, list, wait for and remove sandboxes"},
    {"token", cli_token_main, "create, list and remove API tokens"},
    {"workspace", cli_workspace_main, "create and list workspaces"},
};

static void usage(FILE *f)
{
	fputs("usage: skiff [--url URL] [--token SECRET] COMMAND [ARGS]\n\ncommands:\n", f);
	for (size_t i = 0; i < ARRAY_SIZE(groups); i++)
		fprintf(f, "  %-10s %s\n", groups[i].name, groups[i].summary);
	fputs(
	    "\nThe server is --url, else $SKIFF_URL, else the URL saved by 'skiff login', "
	    "else " CLI_DEFAULT_URL
	    ".\nThe token is --token, else $SKIFF_TOKEN, else the one 'skiff login' saved for that "
	    "URL.\n'skiff COMMAND --help' shows a command's options.\n",
	    f);
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
	    {"url", required_argument, NULL, 'u'},
	    {"token", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	struct cli c = {0};
	int opt;
	opterr = 0;
	/* "+": options end at the group's name, whose own options follow it. */
	while ((opt = getopt_long(argc, argv, "+:h", options, NULL)) != -1) {
		switch (opt) {
		case 'u': c.url_opt = optarg; break;
		case 't': c.token_opt = optarg; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("skiff %s\n", SKIFF_VERSION); return 0;
		default:
			fprintf(stderr,
			        opt == ':' ? "skiff: option '%s' needs a value\n"
			                   : "skiff: unknown option '%s'\n",
			        argv[optind - 1]);
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *name = argv[optind];
	for (size_t i = 0; i < ARRAY_SIZE(groups); i++) {
		if (strcmp(name, groups[i].name) != 0)
			continue;
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			fputs("skiff: cannot initialize libcurl\n", stderr);
			return 1;
		}
		int status = groups[i].main(&c, argc - optind, argv + optind);
		cli_release(&c);
		curl_global_cleanup();
		fflush(stdout);
		return status;
	}
	fputs("skiff: unknown command '", stderr);
	cli_print_safe(stderr, name);
	fputs("'\n", stderr);
	usage(stderr);
	return EXIT_USAGE;
}
