/* A command's last steps inside the sandbox, shared by every way one starts: the main command
 * (init's clone), an exec by the runtime's setns path, and an exec init starts itself for the
 * runtime (init_loop.c). Also the command's strings as they travel in a memfd, and a terminal
 * of the sandbox's own devpts. Linked into the runtime and into skiff-init. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "../lib/fsutil.h"
#include "../lib/timing.h"
#include "internal.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define NOFILE_LIMIT 65536
#define CORE_LIMIT   0
#define PTMX_MAJOR   5 /* /dev/ptmx, and devpts' ptmx */
#define PTMX_MINOR   2

/* The command's environment in env (room for SPEC_MAX_ENV + 4 entries): our defaults unless
 * the spec sets them, then the spec's. Allocates nothing: the command process may share init's
 * memory. */
static void build_env(char *const *given, size_t envc, char *host, char **env)
{
	static char path[] = "PATH=" DEFAULT_PATH, home[] = "HOME=/root";
	char *defaults[] = {path, home, host};
	size_t k = 0;
	for (size_t d = 0; d < ARRAY_SIZE(defaults); d++) {
		size_t klen = strchr(defaults[d], '=') - defaults[d] + 1;
		int overridden = 0;
		for (size_t i = 0; i < envc; i++)
			overridden |= !strncmp(given[i], defaults[d], klen);
		if (!overridden)
			env[k++] = defaults[d];
	}
	for (size_t i = 0; i < envc; i++)
		env[k++] = given[i];
	env[k] = NULL;
}

/* execvpe without touching environ (it may be shared with the runtime): search path for file. */
static void exec_search(const char *file, char *const argv[], char *const envp[], const char *path)
{
	if (strchr(file, '/')) {
		execve(file, argv, envp);
		return;
	}
	int saw_eacces = 0;
	char buf[SPEC_MAX_PATH_BYTES * 2];
	for (const char *p = path;;) {
		const char *colon = strchrnul(p, ':');
		int dlen = (int)(colon - p);
		if (dlen == 0)
			snprintf(buf, sizeof(buf), "%s", file);
		else
			snprintf(buf, sizeof(buf), "%.*s/%s", dlen, p, file);
		execve(buf, argv, envp);
		if (errno == EACCES)
			saw_eacces = 1;
		else if (errno != ENOENT && errno != ENOTDIR)
			return;
		if (!*colon)
			break;
		p = colon + 1;
	}
	errno = saw_eacces ? EACCES : ENOENT;
}

int exec_report_wait(int fd, struct exec_report *ret_failure, uint64_t *ret_about_ns)
{
	for (;;) {
		struct exec_report rep;
		ssize_t got = read(fd, &rep, sizeof(rep));
		if (got < 0 && errno == EINTR)
			continue;
		if (got != (ssize_t)sizeof(rep))
			return 0; /* EOF: the exec went through */
		if (rep.type == EXEC_ABOUT_TO) {
			*ret_about_ns = rep.ns;
			continue;
		}
		rep.type = rep.type == RT_MSG_EXEC_ERROR ? RT_MSG_EXEC_ERROR : RT_MSG_ERROR;
		rep.err.msg[sizeof(rep.err.msg) - 1] = '\0';
		*ret_failure = rep;
		return 1;
	}
}

_Noreturn void rt_command_exec_with(const struct rt_command *s, int err_fd, int go_fd,
                                    rt_command_restrict_fn restrict_fn, const struct rt *rt)
{
	struct exec_report f = {.type = RT_MSG_ERROR};
	struct sk_error *errp = &f.err;
	/* The command starts clean: default dispositions (ignored ones survive exec), no mask. */
	for (int sig = 1; sig < SIGRTMIN; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL);
	for (int sig = SIGRTMIN; sig <= SIGRTMAX; sig++)
		signal(sig, SIG_DFL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	struct rlimit nofile, core = {CORE_LIMIT, CORE_LIMIT};
	struct rlimit nproc = {s->nproc, s->nproc};
	/* Raising a hard limit needs privilege over the host: stay within the runtime's own. */
	getrlimit(RLIMIT_NOFILE, &nofile);
	if (nofile.rlim_max > NOFILE_LIMIT)
		nofile.rlim_max = NOFILE_LIMIT;
	nofile.rlim_cur = nofile.rlim_max;
	setrlimit(RLIMIT_NOFILE, &nofile);
	setrlimit(RLIMIT_CORE, &core);
	/* The uid range is the sandbox's own, so RLIMIT_NPROC counts this sandbox only. */
	if (s->nproc)
		setrlimit(RLIMIT_NPROC, &nproc);

	/* A terminal's session: job control and its signals (^C, SIGWINCH, SIGHUP) reach us. */
	if (s->ctty && (setsid() < 0 || ioctl(0, TIOCSCTTY, 0) < 0)) {
		sk_error_errno(errp, -errno, "make the terminal the controlling one");
		goto fail;
	}
	const char *wd = s->workdir ? s->workdir : "/";
	if (chdir(wd) < 0) {
		sk_error_errno(errp, -errno, "workdir %s", wd);
		goto fail;
	}
	char host[80];
	snprintf(host, sizeof(host), "HOSTNAME=%s", s->hostname ? s->hostname : "");
	char *env[SPEC_MAX_ENV + 4];
	build_env(s->env, s->envc < SPEC_MAX_ENV ? s->envc : SPEC_MAX_ENV, host, env);
	if (restrict_fn && restrict_fn(rt, s, errp) < 0)
		goto fail;
	/* PATH lookup uses the sandbox's PATH, not ours. */
	const char *pathenv = DEFAULT_PATH;
	for (char **e = env; *e; e++)
		if (!strncmp(*e, "PATH=", 5))
			pathenv = *e + 5;
	if (go_fd >= 0) {
		char go;
		ssize_t n;
		do {
			n = read(go_fd, &go, 1);
		} while (n < 0 && errno == EINTR);
		if (n != 1)
			_exit(127); /* init failed: it reports why */
	}
	/* The time exec began, for the start's breakdown: init reads it before the EOF. */
	struct exec_report about = {.type = EXEC_ABOUT_TO, .ns = timing_now_ns()};
	if (write(err_fd, &about, sizeof(about)) < 0) {
		/* init is gone: the sandbox is being torn down */
	}
	exec_search(s->argv[0], s->argv, env, pathenv);
	int r = -errno;
	f.type = RT_MSG_EXEC_ERROR;
	sk_error_errno(errp, r, "run %s", s->argv[0]);
fail:
	if (write(err_fd, &f, sizeof(f)) < 0) {
		/* nothing more to do */
	}
	_exit(127);
}

int rt_command_memfd(const char *workdir, const char *hostname, char *const *argv, size_t argc,
                     char *const *env, size_t envc, struct sk_error *err)
{
	char *const head[2] = {(char *)(workdir ? workdir : ""),
	                       (char *)(hostname ? hostname : "")};
	char *const *lists[3] = {head, argv, env};
	size_t counts[3] = {2, argc, envc};
	size_t size = 0;
	for (int l = 0; l < 3; l++)
		for (size_t i = 0; i < counts[l]; i++)
			size += strlen(lists[l][i]) + 1;
	if (size > RT_COMMAND_MAX_BYTES)
		return sk_error_set(err, -E2BIG, "the command's strings: more than %d bytes",
		                    RT_COMMAND_MAX_BYTES);
	/* One buffer, one write: the memfd is read back whole. */
	_cleanup_free_ char *buf = malloc(size);
	if (!buf)
		return sk_error_set(err, -ENOMEM, "out of memory");
	size_t off = 0;
	for (int l = 0; l < 3; l++)
		for (size_t i = 0; i < counts[l]; i++) {
			size_t len = strlen(lists[l][i]) + 1;
			memcpy(buf + off, lists[l][i], len);
			off += len;
		}
	int fd = memfd_create("skiff-command", MFD_CLOEXEC);
	if (fd < 0)
		return sk_error_errno(err, -errno, "memfd_create");
	for (off = 0; off < size;) {
		ssize_t n = write(fd, buf + off, size - off);
		if (n <= 0) {
			int r = n < 0 ? -errno : -EIO;
			close(fd);
			return sk_error_errno(err, r, "write the command");
		}
		off += (size_t)n;
	}
	return fd;
}

int rt_command_parse(int memfd, unsigned long argc, unsigned long envc, struct rt_command *cmd,
                     char **ret_buf, char ***ret_vec, const char **ret_hostname,
                     struct sk_error *err)
{
	if (argc > SPEC_MAX_ARGS || envc > SPEC_MAX_ENV)
		return sk_error_set(err, -EPROTO, "bad command header");
	off_t size = lseek(memfd, 0, SEEK_END);
	if (size <= 0 || size > RT_COMMAND_MAX_BYTES)
		return sk_error_set(err, -EPROTO, "bad command size");
	char *buf = malloc(size + 1);
	char **vec = calloc(argc + envc + 2, sizeof(char *));
	if (!buf || !vec || pread(memfd, buf, size, 0) != size) {
		free(buf);
		free(vec);
		return sk_error_set(err, -EIO, "read the command");
	}
	buf[size] = '\0';
	/* The working directory and host name come first. */
	const char *workdir = buf;
	const char *hostname = workdir + strlen(workdir) + 1;
	if (hostname >= buf + size || strlen(workdir) >= SPEC_MAX_PATH_BYTES ||
	    strlen(hostname) > SPEC_MAX_HOSTNAME_BYTES) {
		free(buf);
		free(vec);
		return sk_error_set(err, -EPROTO, "bad command working directory or host name");
	}
	size_t k = argc == 0 ? 1 : 0; /* argv is just its NULL */
	for (char *p = (char *)hostname + strlen(hostname) + 1;
	     p < buf + size && k < argc + envc + 1; p += strlen(p) + 1) {
		vec[k++] = p;
		if (k == argc)
			k++; /* argv's NULL */
	}
	if (k != argc + envc + 1) {
		free(buf);
		free(vec);
		return sk_error_set(err, -EPROTO, "command strings don't match their count");
	}
	vec[argc] = NULL;
	vec[argc + 1 + envc] = NULL;
	*cmd = (struct rt_command){.argv = argc ? vec : NULL,
	                           .env = vec + argc + 1,
	                           .envc = envc,
	                           .workdir = workdir[0] ? workdir : NULL,
	                           .hostname = cmd->hostname,
	                           .nproc = cmd->nproc};
	*ret_hostname = hostname;
	*ret_buf = buf;
	*ret_vec = vec;
	return 0;
}

int rt_pty_resize(int pty_fd, unsigned short rows, unsigned short cols)
{
	struct winsize ws = {.ws_row = rows, .ws_col = cols};
	return ioctl(pty_fd, TIOCSWINSZ, &ws) < 0 ? -errno : 0;
}

int rt_pty_open(unsigned short rows, unsigned short cols)
{
	struct open_how how = {.flags = O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK,
	                       .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
	_cleanup_close_ int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return -errno;
	_cleanup_close_ int master = (int)syscall(SYS_openat2, root, "dev/ptmx", &how, sizeof(how));
	if (master < 0)
		return -errno;
	struct stat st;
	if (fstat(master, &st) < 0)
		return -errno;
	if (!S_ISCHR(st.st_mode) || major(st.st_rdev) != PTMX_MAJOR ||
	    minor(st.st_rdev) != PTMX_MINOR)
		return -ENOTTY;
	int unlock = 0;
	if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
		return -errno;
	int r = rt_pty_resize(master, rows, cols);
	if (r < 0)
		return r;
	/* The slave of this very master, without a path lookup. */
	_cleanup_close_ int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (slave < 0)
		return -errno;
	for (int i = 0; i < 3; i++)
		if (dup2(slave, i) < 0)
			return -errno;
	return TAKE_FD(master);
}
