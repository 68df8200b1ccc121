/* skiff-box: one sandbox in the foreground, no server (debugging, benchmarks, scripts; like bwrap).
 *   skiff-box [options] -- CMD [ARG…]   run CMD in a new sandbox; exit with its status
 *   skiff-box gc                        remove what crashed runs left behind */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "../image/busybox.h"
#include "../lib/error.h"
#include "../lib/macros.h"
#include "../runtime/runtime.h"

#include "skiff_box.h"

const int FORWARDED[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};
const size_t NFORWARDED = ARRAY_SIZE(FORWARDED);

void options_release(struct options *o)
{
	spec_release(&o->spec);
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: skiff-box [options] -- CMD [ARG...]\n"
	    "       skiff-box [options] --detach [-- CMD [ARG...]]\n"
	    "       skiff-box exec [--env K=V] [--workdir DIR] ID -- CMD [ARG...]\n"
	    "       skiff-box kill ID...\n"
	    "       skiff-box ls [--json]\n"
	    "       skiff-box gc\n"
	    "(each takes --instance ID)\n"
	    "\n"
	    "Run CMD in a new sandbox in the foreground and exit with its status\n"
	    "(128+N after signal N, 124 after --timeout, 137 after an out-of-memory kill).\n"
	    "\n"
	    "  --rootfs DIR      read-only root filesystem (default: a busybox root)\n"
	    "  --cpu CORES       CPU limit in cores (default %g)\n"
	    "  --memory MIB      memory limit, swap off (default %d)\n"
	    "  --disk MIB        writable layer size (default %d)\n"
	    "  --disk-backend B  where writable layers live: btrfs (a subvolume with a quota),\n"
	    "                    tmpfs (memory), auto (btrfs, else tmpfs; the default;\n"
	    "                    env SKIFF_DISK_BACKEND)\n"
	    "  --pids N          process limit (default %d)\n"
	    "  --timeout S       wall-clock limit in seconds, 0 for none (default %g)\n"
	    "  --network none    loopback only (the default and the only choice here: network\n"
	    "                    egress needs skiffd, `skiff sandbox create --network egress`)\n"
	    "  --env K=V         set an environment variable (repeatable)\n"
	    "  --workdir DIR     working directory inside the sandbox (default /)\n"
	    "  --hostname NAME   host name inside the sandbox\n"
	    "  --json SPEC       a sandbox create body (API.md) inline or from a file; options\n"
	    "                    given on the command line override it\n"
	    "  --instance ID     runtime instance id, 1-4 of [a-z0-9] (default %s; env "
	    "SKIFF_INSTANCE)\n"
	    "  --data DIR        data directory (default %s; env SKIFF_DATA)\n"
	    "  --report FILE     write how the sandbox ended and its usage as JSON to FILE\n"
	    "  --detach          print the new sandbox's id and leave it running (without a\n"
	    "                    command it idles, for execs); it has no timeout\n",
	    SPEC_DEFAULT_CPU, SPEC_DEFAULT_MEMORY_MIB, SPEC_DEFAULT_DISK_MIB, SPEC_DEFAULT_PIDS,
	    SPEC_DEFAULT_TIMEOUT_S, RT_DEFAULT_INSTANCE, DEFAULT_DATA_DIR);
}

void die_usage(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("skiff-box: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(EXIT_USAGE);
}

static int read_spec_file(const char *path, char **ret, size_t *ret_len)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -errno;
	char *buf = malloc(SPEC_MAX_JSON_BYTES + 1);
	if (!buf) {
		fclose(f);
		return -ENOMEM;
	}
	size_t n = fread(buf, 1, SPEC_MAX_JSON_BYTES + 1, f);
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		free(buf);
		return -EIO;
	}
	*ret = buf;
	*ret_len = n;
	return 0;
}

static void apply_json(struct spec *s, const char *arg)
{
	struct sk_error err = {0};
	int r;
	/* An object or an array is inline JSON (an array is refused as "expected a JSON object").
	 */
	char first = arg[strspn(arg, " \t\n")];
	if (first == '{' || first == '[') {
		r = spec_apply_json(s, arg, strlen(arg), &err);
	} else {
		char *buf = NULL;
		size_t len = 0;
		r = read_spec_file(arg, &buf, &len);
		if (r < 0)
			die_usage("--json %s: %s", arg, strerror(-r));
		r = spec_apply_json(s, buf, len, &err);
		free(buf);
	}
	if (r < 0)
		die_usage("--json: %s", err.msg);
}

enum {
	OPT_ROOTFS = 256,
	OPT_CPU,
	OPT_MEMORY,
	OPT_DISK,
	OPT_PIDS,
	OPT_TIMEOUT,
	OPT_NETWORK,
	OPT_ENV,
	OPT_WORKDIR,
	OPT_HOSTNAME,
	OPT_JSON,
	OPT_INSTANCE,
	OPT_DATA,
	OPT_REPORT,
	OPT_DETACH,
	OPT_DISK_BACKEND,
	OPT_HELP,
	OPT_VERSION
};

static const struct option LONGOPTS[] = {
    {"rootfs", required_argument, NULL, OPT_ROOTFS},
    {"cpu", required_argument, NULL, OPT_CPU},
    {"memory", required_argument, NULL, OPT_MEMORY},
    {"disk", required_argument, NULL, OPT_DISK},
    {"pids", required_argument, NULL, OPT_PIDS},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"network", required_argument, NULL, OPT_NETWORK},
    {"env", required_argument, NULL, OPT_ENV},
    {"workdir", required_argument, NULL, OPT_WORKDIR},
    {"hostname", required_argument, NULL, OPT_HOSTNAME},
    {"json", required_argument, NULL, OPT_JSON},
    {"instance", required_argument, NULL, OPT_INSTANCE},
    {"data", required_argument, NULL, OPT_DATA},
    {"report", required_argument, NULL, OPT_REPORT},
    {"detach", no_argument, NULL, OPT_DETACH},
    {"disk-backend", required_argument, NULL, OPT_DISK_BACKEND},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

/* Options apply after --json whatever their order, so the command line overrides the spec. */
int parse_options(int argc, char **argv, struct options *o)
{
	struct sk_error err = {0};
	o->instance = getenv("SKIFF_INSTANCE") ? getenv("SKIFF_INSTANCE") : RT_DEFAULT_INSTANCE;
	o->data_dir = getenv("SKIFF_DATA") ? getenv("SKIFF_DATA") : DEFAULT_DATA_DIR;
	const char *backend = getenv("SKIFF_DISK_BACKEND");
	if (backend && rt_disk_backend_parse(backend, &o->disk_backend) < 0)
		die_usage("SKIFF_DISK_BACKEND: expected auto, btrfs or tmpfs, got '%s'", backend);
	opterr = 0;
	for (int pass = 0; pass < 2; pass++) {
		optind = 1;
		int c;
		while ((c = getopt_long(argc, argv, "+h", LONGOPTS, NULL)) != -1) {
			if (c == '?') {
				/* A long option without its value sets optopt to its enum value. */
				if (optopt >= OPT_ROOTFS)
					die_usage("option %s needs a value (see --help)",
					          argv[optind - 1]);
				if (optopt)
					die_usage("option -%c is unknown (see --help)", optopt);
				die_usage("option %s is unknown or lacks its value (see --help)",
				          argv[optind - 1]);
			}
			if (c == OPT_HELP || c == 'h') {
				usage(stdout);
				exit(0);
			}
			if (c == OPT_VERSION) {
				printf("skiff-box %s\n", SKIFF_VERSION);
				exit(0);
			}
			if ((pass == 0) != (c == OPT_JSON))
				continue;
			int r = 0;
			struct spec *s = &o->spec;
			switch (c) {
			case OPT_JSON: apply_json(s, optarg); break;
			case OPT_ROOTFS:
				r = spec_set_string(&s->rootfs, optarg, "rootfs", &err);
				break;
			case OPT_CPU:
				r = spec_parse_double(optarg, SPEC_MIN_CPU, SPEC_MAX_CPU, "--cpu",
				                      &s->cpu, &err);
				break;
			case OPT_MEMORY:
				r = spec_parse_u64(optarg, SPEC_MIN_MEMORY_MIB, SPEC_MAX_MEMORY_MIB,
				                   "--memory", &s->memory_mib, &err);
				break;
			case OPT_DISK:
				r = spec_parse_u64(optarg, 1, SPEC_MAX_DISK_MIB, "--disk",
				                   &s->disk_mib, &err);
				break;
			case OPT_PIDS:
				r = spec_parse_u64(optarg, 1, SPEC_MAX_PIDS, "--pids", &s->pids,
				                   &err);
				break;
			case OPT_TIMEOUT:
				r = spec_parse_double(optarg, 0, SPEC_MAX_TIMEOUT_S, "--timeout",
				                      &s->timeout_s, &err);
				break;
			case OPT_NETWORK:
				if (!strcmp(optarg, "egress"))
					die_usage(
					    "--network egress needs skiffd: use `skiff sandbox "
					    "create --network egress` (skiff-box runs network none "
					    "only)");
				if (strcmp(optarg, "none") != 0)
					die_usage("--network: expected 'none', got '%s'", optarg);
				s->network = SPEC_NET_NONE;
				break;
			case OPT_ENV: r = spec_set_env(s, optarg, &err); break;
			case OPT_WORKDIR:
				r = spec_set_string(&s->workdir, optarg, "workdir", &err);
				break;
			case OPT_HOSTNAME:
				r = spec_set_string(&s->hostname, optarg, "hostname", &err);
				break;
			case OPT_INSTANCE: o->instance = optarg; break;
			case OPT_DATA: o->data_dir = optarg; break;
			case OPT_DETACH: o->detach = 1; break;
			case OPT_REPORT: o->report = optarg; break;
			case OPT_DISK_BACKEND:
				if (rt_disk_backend_parse(optarg, &o->disk_backend) < 0)
					die_usage("--disk-backend: expected auto, btrfs or tmpfs, "
					          "got '%s'",
					          optarg);
				break;
			}
			if (r < 0)
				die_usage("%s", err.msg);
		}
	}
	return optind;
}

static const char *end_name(enum rt_end e)
{
	switch (e) {
	case RT_END_EXITED: return "exited";
	case RT_END_SIGNALED: return "signaled";
	case RT_END_OOM: return "oom";
	case RT_END_KILLED: return "killed";
	case RT_END_LOST: return "lost";
	}
	return "unknown";
}

/* How the sandbox ended, its usage and where its start's time went (before teardown). */
static json_t *report_new(struct rt_sandbox *sb, const struct rt_result *res, int timed_out,
                          double wall_s)
{
	const char *id = rt_sandbox_id(sb);
	json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:f, s:{s:I, s:I, s:I, s:I}}", "id", id, "end",
	                      timed_out ? "timeout" : end_name(res->end), "exit_code", res->code,
	                      "signal", res->signal, "wall_s", wall_s, "usage", "cpu_ns",
	                      (json_int_t)res->usage.cpu_ns, "memory_bytes",
	                      (json_int_t)res->usage.memory_bytes, "memory_peak_bytes",
	                      (json_int_t)res->usage.memory_peak_bytes, "oom_kills",
	                      (json_int_t)res->usage.oom_kills);
	if (!o)
		return NULL;
	struct rt_step steps[64];
	int n = rt_sandbox_timings(sb, steps, 64);
	json_t *t = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(
		    t, json_pack("{s:s, s:f}", "step", steps[i].name, "us", steps[i].ns / 1000.0));
	json_object_set_new(o, "start_steps", t);
	return o;
}

static void report_write(json_t *o, const char *path, double teardown_s)
{
	json_object_set_new(o, "teardown_us", json_real(teardown_s * 1e6));
	if (json_dump_file(o, path, JSON_COMPACT) < 0)
		fprintf(stderr, "skiff-box: could not write the report to %s\n", path);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int exit_code_for(const struct sk_error *err)
{
	if (err->code == -SK_EINVAL_SPEC)
		return EXIT_USAGE;
	if (err->code == -SK_ECMD_NOTFOUND)
		return EXIT_NOT_FOUND;
	if (err->code == -SK_ECMD_EXEC)
		return EXIT_CANNOT_EXEC;
	return EXIT_RUNTIME;
}

/* Fds 0-2 must be open: otherwise the runtime's own fds would land there and be taken for
 * stdio (by the sandbox, or by our messages). */
static void stdio_ensure(void)
{
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0)
			continue;
		int n = open("/dev/null", O_RDWR);
		if (n >= 0 && n != fd) {
			dup2(n, fd);
			close(n);
		}
	}
}

int main(int argc, char **argv)
{
	stdio_ensure();
	/* A reader that went away must not kill us before the sandbox is torn down. */
	signal(SIGPIPE, SIG_IGN);
	static const struct {
		const char *name;
		int (*run)(int argc, char **argv);
	} COMMANDS[] = {{"gc", cmd_gc}, {"exec", cmd_exec}, {"kill", cmd_kill}, {"ls", cmd_ls}};
	/* `skiff-box --instance ID exec …` works like `skiff-box exec --instance ID …`. */
	int at = 1;
	while (at + 1 < argc && (!strcmp(argv[at], "--instance") || !strcmp(argv[at], "--data"))) {
		setenv(!strcmp(argv[at], "--instance") ? "SKIFF_INSTANCE" : "SKIFF_DATA",
		       argv[at + 1], 1);
		at += 2;
	}
	for (size_t i = 0; at < argc && i < ARRAY_SIZE(COMMANDS); i++)
		if (!strcmp(argv[at], COMMANDS[i].name))
			return COMMANDS[i].run(argc - at, argv + at);

	_cleanup_(options_release) struct options o = {0};
	spec_init(&o.spec);
	int first = parse_options(argc, argv, &o);
	struct sk_error err = {0};
	if (first < argc && spec_set_argv(&o.spec, argv + first, argc - first, &err) < 0)
		die_usage("%s", err.msg);
	if (!o.spec.argv && !o.detach)
		die_usage("no command given: skiff-box [options] -- CMD [ARG...] (see --help)");
	if (spec_validate(&o.spec, &err) < 0)
		die_usage("%s", err.msg);
	if (!rt_instance_valid(o.instance))
		die_usage("--instance '%s': 1 to %d characters of a-z and 0-9", o.instance,
		          RT_INSTANCE_MAX_CHARS);

	char rootfs[4096];
	if (o.spec.rootfs) {
		struct stat st;
		if (stat(o.spec.rootfs, &st) < 0 || !S_ISDIR(st.st_mode))
			die_usage("--rootfs %s: not a directory", o.spec.rootfs);
		snprintf(rootfs, sizeof(rootfs), "%s", o.spec.rootfs);
	} else if (o.spec.image && strcmp(o.spec.image, "busybox") != 0) {
		die_usage("image '%s': skiff-box knows only 'busybox'; use --rootfs DIR",
		          o.spec.image);
	} else if (image_busybox_ensure(o.data_dir, getenv(BUSYBOX_PATH_ENV), rootfs,
	                                sizeof(rootfs), &err) < 0) {
		fprintf(stderr, "skiff-box: %s\n", err.msg);
		return EXIT_RUNTIME;
	}

	/* Signals are read from a signalfd and forwarded; block them before the sandbox exists. */
	sigset_t mask;
	sigemptyset(&mask);
	for (size_t i = 0; i < ARRAY_SIZE(FORWARDED); i++)
		sigaddset(&mask, FORWARDED[i]);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	_cleanup_close_ int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		fprintf(stderr, "skiff-box: signalfd: %s\n", strerror(errno));
		return EXIT_RUNTIME;
	}

	struct rt rt;
	if (rt_init(&rt, o.instance, NULL, &err) < 0) {
		fprintf(stderr, "skiff-box: %s\n", err.msg);
		return exit_code_for(&err);
	}
	int r = disk_setup(&rt, o.data_dir, o.disk_backend, 1);
	if (r) {
		rt_release(&rt);
		return r;
	}
	double t0 = now_s();
	struct rt_sandbox *sb;
	if (rt_sandbox_start(&rt, &o.spec, rootfs, o.detach ? RT_START_DETACHED : 0, &sb, &err) <
	    0) {
		fprintf(stderr, "skiff-box: %s\n", err.msg);
		rt_release(&rt);
		return exit_code_for(&err);
	}
	if (o.detach) {
		/* It runs on without us: `skiff-box exec|kill|ls` find it again. */
		printf("%s\n", rt_sandbox_id(sb));
		rt_sandbox_close(sb);
		rt_release(&rt);
		return 0;
	}

	_cleanup_close_ int tfd = -1;
	if (o.spec.timeout_s > 0) {
		tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
		if (tfd < 0) {
			fprintf(stderr, "skiff-box: timerfd: %s\n", strerror(errno));
			rt_sandbox_destroy(sb, NULL);
			rt_release(&rt);
			return EXIT_RUNTIME;
		}
		struct itimerspec its = {0};
		its.it_value.tv_sec = (time_t)o.spec.timeout_s;
		its.it_value.tv_nsec =
		    (long)((o.spec.timeout_s - (double)its.it_value.tv_sec) * 1e9);
		if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
			its.it_value.tv_nsec = 1;
		timerfd_settime(tfd, 0, &its, NULL);
	}
	short oom_events;
	int oom_fd = rt_sandbox_oom_fd(sb, &oom_events);
	int timed_out = 0, oom = 0, oom_confirming = 0;
	for (;;) {
		struct pollfd p[4] = {
		    {.fd = rt_sandbox_pidfd(sb), .events = POLLIN},
		    {.fd = sfd, .events = POLLIN},
		    {.fd = tfd, .events = POLLIN},
		    {.fd = oom ? -1 : oom_fd, .events = oom_events},
		};
		if (poll(p, 4, oom_confirming ? RT_OOM_RECHECK_MS : -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[0].revents)
			break;
		if (p[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) == sizeof(si))
				rt_sandbox_signal(sb, (int)si.ssi_signo);
		}
		if (p[2].revents & POLLIN && !timed_out) {
			timed_out = 1;
			rt_sandbox_kill(sb, RT_END_KILLED);
		}
		if (p[3].revents || oom_confirming) {
			int r = rt_sandbox_check_oom(sb);
			oom = r == 1;
			oom_confirming = r == -EAGAIN;
		}
	}
	struct rt_result res;
	rt_sandbox_reap(sb, &res);
	double wall = now_s() - t0;
	int status;
	if (timed_out) {
		fprintf(stderr, "skiff-box: timed out after %g s: the sandbox was killed\n",
		        o.spec.timeout_s);
		status = EXIT_TIMEOUT;
	} else if (res.end == RT_END_OOM) {
		fprintf(stderr,
		        "skiff-box: out of memory: the sandbox reached its %llu MiB limit and was "
		        "killed\n",
		        (unsigned long long)o.spec.memory_mib);
		status = EXIT_KILLED;
	} else if (res.end == RT_END_LOST) {
		fprintf(stderr, "skiff-box: the sandbox's init died unexpectedly\n");
		status = EXIT_KILLED;
	} else {
		status = res.code;
	}
	json_t *report = o.report ? report_new(sb, &res, timed_out, wall) : NULL;
	if (report)
		json_object_set_new(report, "disk_backend", json_string(rt_disk_backend_name(&rt)));
	double td = now_s();
	if (rt_sandbox_destroy(sb, &err) < 0)
		fprintf(stderr, "skiff-box: teardown: %s\n", err.msg);
	if (report) {
		report_write(report, o.report, now_s() - td);
		json_decref(report);
	}
	rt_release(&rt);
	return status;
}
