/* skiff login: check a token against a server (GET /v1/whoami) and save both in the config file,
 * mode 0600 in a 0700 directory, replaced atomically. */
#include "cli.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>

#include "../lib/fsutil.h"

#define LOGIN_USAGE "[--url URL] [--token SECRET]"

/* Read one line, the token, from stdin; without echo when stdin is a terminal. */
static int token_read_stdin(const char *url, char **ret, struct sk_error *err)
{
	char buf[CLI_MAX_TOKEN_BYTES + 2];
	bool tty = isatty(STDIN_FILENO);
	struct termios saved, quiet;
	bool echo_off = false;
	if (tty) {
		fprintf(stderr, "Token for %s: ", url);
		fflush(stderr);
		if (tcgetattr(STDIN_FILENO, &saved) == 0) {
			quiet = saved;
			quiet.c_lflag &= ~(tcflag_t)ECHO;
			echo_off = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
		}
	}
	char *line = fgets(buf, sizeof(buf), stdin);
	if (echo_off) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
		fputc('\n', stderr);
	}
	size_t len = line ? strlen(buf) : 0;
	if (len == sizeof(buf) - 1 && buf[len - 1] != '\n') {
		explicit_bzero(buf, sizeof(buf));
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "the token on stdin is longer than %d bytes",
		                    CLI_MAX_TOKEN_BYTES);
	}
	char *s = buf;
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' ||
	                   buf[len - 1] == '\t'))
		buf[--len] = '\0';
	while (*s == ' ' || *s == '\t')
		s++;
	if (!line || !*s) {
		explicit_bzero(buf, sizeof(buf));
		return sk_error_set(
		    err, -SK_EINVAL_SPEC,
		    tty ? "no token entered"
		        : "no token on stdin: pass --token SECRET or pipe the secret "
		          "in, one line");
	}
	*ret = strdup(s);
	explicit_bzero(buf, sizeof(buf));
	if (!*ret)
		return sk_error_errno(err, -ENOMEM, "token");
	return 0;
}

/* Write {"url","token"} to the config file: a temporary file in the same directory, then rename,
 * so a reader never sees half a file. */
static int config_save(const char *url, const char *token, char **ret_path, struct sk_error *err)
{
	_cleanup_free_ char *dir = NULL, *path = NULL, *tmp = NULL, *text = NULL;
	int r = cli_config_path(&dir, &path, err);
	if (r < 0)
		return r;
	r = fs_mkdir_p(dir, 0700);
	if (r < 0)
		return sk_error_errno(err, r, "create %s", dir);
	if (chmod(dir, 0700) < 0) /* it holds a secret, whatever made it before */
		return sk_error_errno(err, -errno, "chmod %s", dir);

	_cleanup_json_ json_t *cfg = json_pack("{s:s, s:s}", "url", url, "token", token);
	text = cfg ? json_dumps(cfg, JSON_INDENT(2)) : NULL;
	if (!text || asprintf(&tmp, "%s/.config.json.XXXXXX", dir) < 0)
		return sk_error_errno(err, -ENOMEM, "config");
	_cleanup_close_ int fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600 */
	if (fd < 0)
		return sk_error_errno(err, -errno, "create a file in %s", dir);
	size_t len = strlen(text);
	text[len] = '\0';
	r = 0;
	if (fchmod(fd, 0600) < 0 || write(fd, text, len) != (ssize_t)len ||
	    write(fd, "\n", 1) != 1 || fsync(fd) < 0)
		r = sk_error_errno(err, errno ? -errno : -EIO, "write %s", tmp);
	explicit_bzero(text, len);
	if (r == 0 && rename(tmp, path) < 0)
		r = sk_error_errno(err, -errno, "rename %s to %s", tmp, path);
	if (r < 0) {
		unlink(tmp);
		return r;
	}
	*ret_path = TAKE_PTR(path);
	return 0;
}

int cli_login_main(struct cli *c, int argc, char **argv)
{
	static const struct option options[] = {
	    {"url", required_argument, NULL, 'u'},
	    {"token", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *url_opt = NULL, *token_opt = c->token_opt;
	int opt;
	opterr = 0;
	optind = 0;
	while ((opt = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
		switch (opt) {
		case 'u': url_opt = optarg; break;
		case 't': token_opt = optarg; break;
		case 'h':
			printf("usage: skiff login %s\n\nCheck the token (read from stdin without "
			       "--token) with the server and save both for later commands.\n",
			       LOGIN_USAGE);
			return 0;
		default: return cli_option_error("login", LOGIN_USAGE, opt, argv);
		}
	}
	if (optind < argc)
		return cli_usage_error("login", LOGIN_USAGE, "unexpected argument '%s'",
		                       argv[optind]);

	struct sk_error err = {0};
	/* The URL as everywhere else, login's own --url first; the token only from here or stdin.
	 */
	if (url_opt)
		c->url_opt = url_opt;
	if (cli_url_resolve(c, &err) < 0)
		return cli_fail(&err);
	if (token_opt)
		c->token = strdup(token_opt);
	else if (token_read_stdin(c->url, &c->token, &err) < 0)
		return cli_fail(&err);
	if (!c->token)
		return cli_fail(&(struct sk_error){.msg = "out of memory"});
	if (cli_token_check(c->token, &err) < 0)
		return cli_fail(&err);

	_cleanup_json_ json_t *who = NULL;
	if (cli_http(c, "GET", "/v1/whoami", NULL, CLI_REQUEST_TIMEOUT_S, &who, &err) < 0) {
		sk_error_prefix(&err, "login to %s", c->url);
		return cli_fail(&err);
	}
	_cleanup_free_ char *path = NULL;
	if (config_save(c->url, c->token, &path, &err) < 0)
		return cli_fail(&err);
	const char *role = cli_json_str(who, "role");
	const char *ws = cli_json_str(who, "workspace_name");
	if (!ws)
		ws = cli_json_str(who, "workspace");
	printf("logged in to %s as ", c->url);
	cli_print_safe(stdout, role ? role : "?");
	fputs(" in workspace ", stdout);
	cli_print_safe(stdout, ws ? ws : "?");
	fputc('\n', stdout);
	return 0;
}
