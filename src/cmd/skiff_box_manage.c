/* skiff-box's subcommands for sandboxes that outlive a command line (--detach):
 *   exec ID -- CMD   run CMD in a running sandbox, stdio passed, exit with its status
 *   kill ID…         end sandboxes and remove everything they hold
 *   ls               list the instance's sandboxes
 *   gc               remove what crashed runs left behind */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/fsutil.h"
#include "skiff_box.h"

int exit_code_of_status(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return EXIT_RUNTIME;
}

static const char *instance_default(void)
{
	const char *env = getenv("SKIFF_INSTANCE");
	return env ? env : RT_DEFAULT_INSTANCE;
}

/* Say once per data directory (and again when the reason changes) that writable layers fall
 * back to tmpfs: every run repeating it would be noise on stderr, which scripts read.
 * <data>/disk.tmpfs holds the reason last said; it goes once btrfs is had again. */
static void disk_fallback_note(const char *data_dir, const char *why)
{
	char path[4096], said[SK_ERROR_MSG_BYTES];
	if (snprintf(path, sizeof(path), "%s/disk.tmpfs", data_dir) >= (int)sizeof(path))
		return;
	if (!why[0]) {
		unlink(path);
		return;
	}
	if (fs_read_at(AT_FDCWD, path, said, sizeof(said)) >= 0 && !strcmp(said, why))
		return;
	fprintf(stderr, "skiff-box: disk: no btrfs (%s): writable layers are tmpfs, in memory\n",
	        why);
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0 && write(fd, why, strlen(why)) < 0) {
		/* said again next time */
	}
}

int disk_setup(struct rt *rt, const char *data_dir, enum rt_disk_backend backend, int make)
{
	struct sk_error err = {0};
	if (rt_disk_setup(rt, data_dir, backend, make, &err) < 0) {
		fprintf(stderr, "skiff-box: %s\n", err.msg);
		return exit_code_for(&err);
	}
	disk_fallback_note(data_dir, rt->disk.why_tmpfs);
	return 0;
}

/* rt_init for a subcommand, with the data directory's disk if it is there (never made);
 * on failure reports and returns the exit status (> 0). */
static int runtime_open(struct rt *rt, const char *instance, const char *data, const char *what)
{
	if (!rt_instance_valid(instance))
		die_usage("--instance '%s': 1 to %d characters of a-z and 0-9", instance,
		          RT_INSTANCE_MAX_CHARS);
	struct sk_error err = {0};
	if (rt_init(rt, instance, NULL, &err) < 0) {
		fprintf(stderr, "skiff-box: %s: %s\n", what, err.msg);
		return exit_code_for(&err);
	}
	if (!data)
		data = getenv("SKIFF_DATA") ? getenv("SKIFF_DATA") : DEFAULT_DATA_DIR;
	int r = disk_setup(rt, data, RT_DISK_AUTO, 0);
	if (r)
		rt_release(rt);
	return r;
}

int cmd_gc(int argc, char **argv)
{
	_cleanup_(options_release) struct options o = {0};
	spec_init(&o.spec);
	int first = parse_options(argc, argv, &o);
	if (first < argc)
		die_usage("gc takes no arguments");
	struct rt rt;
	int r = runtime_open(&rt, o.instance, o.data_dir, "gc");
	if (r)
		return r;
	struct sk_error err = {0};
	int n = rt_gc(&rt, &err);
	rt_instance_remove_if_idle(&rt);
	rt_release(&rt);
	printf("removed %d abandoned sandbox%s\n", n < 0 ? 0 : n, n == 1 ? "" : "es");
	return n < 0 ? EXIT_RUNTIME : 0;
}

static const struct option EXEC_OPTS[] = {
    {"env", required_argument, NULL, 'e'},
    {"workdir", required_argument, NULL, 'w'},
    {"instance", required_argument, NULL, 'i'},
    {NULL, 0, NULL, 0},
};

int cmd_exec(int argc, char **argv)
{
	_cleanup_(options_release) struct options o = {0};
	spec_init(&o.spec);
	o.instance = instance_default();
	struct sk_error err = {0};
	opterr = 0;
	optind = 1;
	int c;
	while ((c = getopt_long(argc, argv, "+", EXEC_OPTS, NULL)) != -1) {
		int r = 0;
		switch (c) {
		case 'e': r = spec_set_env(&o.spec, optarg, &err); break;
		case 'w': r = spec_set_string(&o.spec.workdir, optarg, "workdir", &err); break;
		case 'i': o.instance = optarg; break;
		default:
			die_usage("exec: option %s is unknown or lacks its value",
			          argv[optind - 1]);
		}
		if (r < 0)
			die_usage("exec: %s", err.msg);
	}
	if (optind >= argc)
		die_usage(
		    "exec: usage: skiff-box exec [--env K=V] [--workdir DIR] ID -- CMD [ARG...]");
	const char *id = argv[optind++];
	if (optind < argc && !strcmp(argv[optind], "--"))
		optind++;
	if (optind >= argc)
		die_usage("exec: no command given");
	if (spec_set_argv(&o.spec, argv + optind, argc - optind, &err) < 0 ||
	    spec_validate(&o.spec, &err) < 0)
		die_usage("exec: %s", err.msg);

	sigset_t mask;
	sigemptyset(&mask);
	for (size_t i = 0; i < NFORWARDED; i++)
		sigaddset(&mask, FORWARDED[i]);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	_cleanup_close_ int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		fprintf(stderr, "skiff-box: signalfd: %s\n", strerror(errno));
		return EXIT_RUNTIME;
	}
	struct rt rt;
	int r = runtime_open(&rt, o.instance, NULL, "exec");
	if (r)
		return r;
	struct rt_sandbox *sb;
	if (rt_sandbox_attach(&rt, id, &sb, &err) < 0) {
		fprintf(stderr, "skiff-box: exec: %s\n", err.msg);
		rt_release(&rt);
		return err.code == -ENOENT || err.code == -EBUSY ? EXIT_USAGE : exit_code_for(&err);
	}
	struct rt_exec_spec es = {
	    .argv = o.spec.argv,
	    .env = o.spec.env,
	    .envc = o.spec.envc,
	    .workdir = o.spec.workdir,
	    .stdio = {0, 1, 2},
	};
	struct rt_exec ex;
	if (rt_sandbox_exec(sb, &es, &ex, &err) < 0) {
		fprintf(stderr, "skiff-box: exec: %s\n", err.msg);
		rt_sandbox_close(sb);
		rt_release(&rt);
		return err.code == -ESRCH ? EXIT_USAGE : exit_code_for(&err);
	}
	for (;;) {
		struct pollfd p[2] = {{.fd = ex.pidfd, .events = POLLIN},
		                      {.fd = sfd, .events = POLLIN}};
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[0].revents)
			break;
		struct signalfd_siginfo si;
		while (read(sfd, &si, sizeof(si)) == sizeof(si))
			rt_exec_signal(&ex, (int)si.ssi_signo);
	}
	int status = 0;
	r = rt_exec_wait(sb, &ex, -1, &status);
	rt_exec_release(&ex);
	rt_sandbox_close(sb);
	rt_release(&rt);
	if (r < 0) {
		fprintf(stderr, "skiff-box: exec: its exit status is lost: the sandbox ended\n");
		return EXIT_KILLED;
	}
	return exit_code_of_status(status);
}

static const struct option INSTANCE_OPTS[] = {
    {"instance", required_argument, NULL, 'i'},
    {"json", no_argument, NULL, 'j'},
    {NULL, 0, NULL, 0},
};

/* Parse --instance (and --json where allowed); returns the first argument's index. */
static int parse_simple(int argc, char **argv, const char *what, const char **instance, int *json)
{
	*instance = instance_default();
	opterr = 0;
	optind = 1;
	int c;
	while ((c = getopt_long(argc, argv, "+", INSTANCE_OPTS, NULL)) != -1) {
		if (c == 'i')
			*instance = optarg;
		else if (c == 'j' && json)
			*json = 1;
		else
			die_usage("%s: option %s is unknown or lacks its value", what,
			          argv[optind - 1]);
	}
	return optind;
}

int cmd_kill(int argc, char **argv)
{
	const char *instance;
	int first = parse_simple(argc, argv, "kill", &instance, NULL);
	if (first >= argc)
		die_usage("kill: usage: skiff-box kill ID...");
	struct rt rt;
	int status = runtime_open(&rt, instance, NULL, "kill");
	if (status)
		return status;
	for (int i = first; i < argc; i++) {
		struct sk_error err = {0};
		struct rt_sandbox *sb;
		int r = rt_sandbox_attach(&rt, argv[i], &sb, &err);
		/* Not a sandbox we may kill (no such id, or a foreground one): as for exec, a
		 * usage error; a failure to end one that we may kill is the runtime's. */
		int s =
		    r == -ENOENT || r == -EBUSY || r == -SK_EINVAL_SPEC ? EXIT_USAGE : EXIT_RUNTIME;
		if (r == 0) {
			r = rt_sandbox_destroy(sb, &err);
			s = EXIT_RUNTIME;
		}
		if (r < 0) {
			fprintf(stderr, "skiff-box: kill: %s\n", err.msg);
			if (s > status)
				status = s;
		}
	}
	rt_release(&rt);
	return status;
}

static const char *state_name(enum rt_state s)
{
	switch (s) {
	case RT_STATE_RUNNING: return "running";
	case RT_STATE_EXITED: return "exited";
	case RT_STATE_LOST: return "lost";
	case RT_STATE_FOREGROUND: return "foreground";
	}
	return "unknown";
}

int cmd_ls(int argc, char **argv)
{
	const char *instance;
	int json = 0;
	int first = parse_simple(argc, argv, "ls", &instance, &json);
	if (first < argc)
		die_usage("ls takes no arguments");
	struct rt rt;
	int r = runtime_open(&rt, instance, NULL, "ls");
	if (r)
		return r;
	struct sk_error err = {0};
	struct rt_sandbox_info *list = NULL;
	int n = rt_sandbox_list(&rt, &list, &err);
	rt_release(&rt);
	if (n < 0) {
		fprintf(stderr, "skiff-box: ls: %s\n", err.msg);
		return EXIT_RUNTIME;
	}
	if (json) {
		json_t *items = json_array();
		for (int i = 0; i < n; i++) {
			json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "id", list[i].id, "state",
			                      state_name(list[i].state), "created_at",
			                      list[i].created_at, "command", list[i].command);
			if (list[i].state == RT_STATE_RUNNING)
				json_object_set_new(o, "pid", json_integer(list[i].pid));
			if (list[i].state == RT_STATE_EXITED)
				json_object_set_new(
				    o, "exit_code",
				    json_integer(exit_code_of_status(list[i].exit_status)));
			json_array_append_new(items, o);
		}
		json_dumpf(items, stdout, JSON_COMPACT);
		putchar('\n');
		json_decref(items);
	} else {
		printf("%-30s %-10s %-5s %-20s %s\n", "ID", "STATE", "EXIT", "CREATED", "COMMAND");
		for (int i = 0; i < n; i++) {
			char code[16] = "-";
			if (list[i].state == RT_STATE_EXITED)
				snprintf(code, sizeof(code), "%d",
				         exit_code_of_status(list[i].exit_status));
			printf("%-30s %-10s %-5s %-20s %s\n", list[i].id, state_name(list[i].state),
			       code, list[i].created_at, list[i].command);
		}
	}
	free(list);
	return 0;
}
