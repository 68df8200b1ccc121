/* The spawner (src/worker/spawner*.c) against the real kernel: needs root. A forked child runs
 * spawner_main on a socket pair, with an instance of its own and a temporary data directory; the
 * tests speak the protocol of docs/WORKER.md to it: sandboxes made from the pool and on the spot,
 * execs and their output, how things end (exit codes, signals, timeout, terminate), bad
 * requests, a restart that finds a running sandbox again, and file operations in a sandbox's root
 * (escapes refused or kept inside). Nothing is left afterwards. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "../../src/image/busybox.h"
#include "../../src/image/manifest.h"
#include "../../src/lib/encoding.h"
#include "../../src/lib/fsutil.h"
#include "../../src/lib/id.h"
#include "../../src/lib/sock.h"
#include "../../src/runtime/caps.h"
#include "../../src/runtime/runtime.h"
#include "../../src/worker/spawner.h"
#include "../../src/worker/spawner_internal.h"
#include "../../src/worker/stdin_holder.h"

#define WAIT_MS 20000

struct fixture {
	char instance[8];
	char data[64];
	struct spawner_config cfg;
	char holder[4096]; /* the stdin holder program */
	pid_t pid;
	int fd;
	int next_req;
	char *buf;
	size_t len, cap;
	json_t *events; /* received, not yet waited for */
	int passed[4];  /* descriptors passed with replies, in order (-1: none) */
	int store_lock; /* the disk's lock while store_open's store is open (-1: none) */
};

static void run_dir_names(char *out, size_t size)
{
	out[0] = '\0';
	DIR *d = opendir(RT_DEFAULT_RUN_DIR);
	struct dirent *de;
	size_t off = 0;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		int w = snprintf(out + off, size - off, "%s ", de->d_name);
		if (w > 0 && (size_t)w < size - off)
			off += (size_t)w;
	}
	if (d)
		closedir(d);
}

/* Stop a spawner a failed test left running (it holds the instance and its sandboxes). */
static void spawner_kill(struct fixture *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	if (f->pid > 0)
		waitpid(f->pid, NULL, 0);
	f->pid = 0;
}

static void spawner_up(struct fixture *f, int pool)
{
	spawner_kill(f);
	f->cfg.pool_size = pool;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(sv[0]);
		_exit(spawner_main(&f->cfg, sv[1]));
	}
	close(sv[1]);
	f->pid = pid;
	f->fd = sv[0];
	f->len = 0;
	json_array_clear(f->events);
	for (size_t i = 0; i < ARRAY_SIZE(f->passed); i++)
		f->passed[i] = -1;
}

static void spawner_down(struct fixture *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	if (f->pid > 0) {
		int status = 0;
		waitpid(f->pid, &status, 0);
		f->pid = 0;
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
}

static void send_raw(struct fixture *f, const char *text, size_t len)
{
	assert_int_equal(spawner_send(f->fd, text, len), 0);
}

/* Read one message (waiting up to WAIT_MS). */
static json_t *recv_msg(struct fixture *f)
{
	for (;;) {
		const char *msg;
		size_t mlen;
		ssize_t n = spawner_frame_parse(f->buf, f->len, &msg, &mlen);
		assert_true(n >= 0);
		if (n > 0) {
			json_t *m = json_loadb(msg, mlen, 0, NULL);
			assert_non_null(m);
			memmove(f->buf, f->buf + n, f->len - (size_t)n);
			f->len -= (size_t)n;
			return m;
		}
		if (f->cap - f->len < 65536) {
			f->cap = f->cap ? f->cap * 2 : 1 << 20;
			f->buf = realloc(f->buf, f->cap);
		}
		struct pollfd p = {.fd = f->fd, .events = POLLIN};
		if (poll(&p, 1, WAIT_MS) != 1)
			fail_msg("no message from the spawner within %d ms", WAIT_MS);
		int pfd;
		ssize_t r = sock_recv_fd(f->fd, f->buf + f->len, f->cap - f->len, &pfd);
		if (r <= 0)
			fail_msg("the spawner's socket closed");
		f->len += (size_t)r;
		for (size_t i = 0; pfd >= 0 && i < ARRAY_SIZE(f->passed); i++)
			if (f->passed[i] < 0)
				f->passed[i] = TAKE_FD(pfd);
		if (pfd >= 0)
			close(pfd);
	}
}

/* Send a request (takes msg) without waiting for its reply; returns its req. */
static int send_req(struct fixture *f, json_t *msg)
{
	int req = ++f->next_req;
	json_object_set_new(msg, "req", json_integer(req));
	char *text = json_dumps(msg, JSON_COMPACT);
	send_raw(f, text, strlen(text));
	free(text);
	json_decref(msg);
	return req;
}

/* The reply to req; other messages meanwhile are queued with the events. */
static json_t *wait_reply(struct fixture *f, int req)
{
	for (;;) {
		size_t i;
		json_t *m;
		json_array_foreach (f->events, i, m) {
			if (json_integer_value(json_object_get(m, "req")) == req &&
			    json_object_get(m, "ok")) {
				json_incref(m);
				json_array_remove(f->events, i);
				return m;
			}
		}
		json_array_append_new(f->events, recv_msg(f));
	}
}

/* Send a request (takes msg), return its reply; events meanwhile are queued. */
static json_t *call(struct fixture *f, json_t *msg)
{
	return wait_reply(f, send_req(f, msg));
}

static int is_ok(json_t *reply)
{
	return json_is_true(json_object_get(reply, "ok"));
}

static const char *error_code(json_t *reply)
{
	const char *c = json_string_value(json_object_get(json_object_get(reply, "error"), "code"));
	return c ? c : "";
}

static void expect_ok(json_t *reply)
{
	if (!is_ok(reply)) {
		char *t = json_dumps(reply, 0);
		fail_msg("expected ok, got %s", t);
	}
}

/* The event named name for sandbox id (and exec, if given), waiting for it. */
static json_t *wait_event(struct fixture *f, const char *name, const char *id, const char *exec)
{
	for (;;) {
		size_t i;
		json_t *e;
		json_array_foreach (f->events, i, e) {
			const char *en = json_string_value(json_object_get(e, "event"));
			const char *eid = json_string_value(json_object_get(e, "id"));
			const char *ex = json_string_value(json_object_get(e, "exec"));
			if (en && !strcmp(en, name) && eid && !strcmp(eid, id) &&
			    (!exec || (ex && !strcmp(ex, exec)))) {
				json_incref(e);
				json_array_remove(f->events, i);
				return e;
			}
		}
		json_array_append_new(f->events, recv_msg(f));
	}
}

static void new_id(const char *prefix, char *buf)
{
	assert_int_equal(id_new(prefix, buf, ID_MAX_BYTES), 0);
}

static json_t *create(struct fixture *f, const char *id, const char *spec_json)
{
	json_t *spec = json_loads(spec_json, 0, NULL);
	assert_non_null(spec);
	return call(f, json_pack("{s:s, s:s, s:o}", "op", "create", "id", id, "spec", spec));
}

static json_t *exec_cmd(struct fixture *f, const char *id, const char *ex, const char *cmd_json)
{
	json_t *cmd = json_loads(cmd_json, 0, NULL);
	assert_non_null(cmd);
	return call(f, json_pack("{s:s, s:s, s:s, s:o}", "op", "exec", "id", id, "exec", ex,
	                         "command", cmd));
}

/* The output op's data, decoded into buf (NUL-terminated); the reply is returned. */
static json_t *output(struct fixture *f, const char *id, const char *ex, const char *stream,
                      long long offset, char *buf, size_t size)
{
	json_t *m = json_pack("{s:s, s:s, s:s, s:I, s:I}", "op", "output", "id", id, "stream",
	                      stream, "offset", (json_int_t)offset, "max", (json_int_t)(size - 1));
	if (ex)
		json_object_set_new(m, "exec", json_string(ex));
	json_t *r = call(f, m);
	expect_ok(r);
	const char *b64 = json_string_value(json_object_get(r, "data_b64"));
	assert_non_null(b64);
	long n = base64_decode(b64, strlen(b64), (unsigned char *)buf);
	assert_true(n >= 0 && (size_t)n < size);
	buf[n] = '\0';
	return r;
}

/* The runtime's state directory of the sandbox the API knows as id. */
static void state_dir(struct fixture *f, const char *id, char *out, size_t size)
{
	struct rt rt;
	struct sk_error err = {0};
	assert_int_equal(rt_init(&rt, f->instance, NULL, &err), 0);
	/* The data directory's disk, if the spawner mounted it: its layers go with gc, and it is
	 * unmounted with the idle instance. */
	assert_int_equal(rt_disk_setup(&rt, f->data, RT_DISK_AUTO, 0, &err), 0);
	struct rt_sandbox_info *list = NULL;
	int n = rt_sandbox_list(&rt, &list, &err);
	out[0] = '\0';
	for (int i = 0; i < n; i++)
		if (!strcmp(list[i].label, id))
			snprintf(out, size, "%s/%s", rt.inst_dir, list[i].id);
	free(list);
	rt_release(&rt);
	assert_true(out[0] != '\0');
}

static void remove_sandbox(struct fixture *f, const char *id)
{
	json_t *r = call(f, json_pack("{s:s, s:s}", "op", "remove", "id", id));
	expect_ok(r);
	json_decref(r);
}

static int setup(void **state)
{
	if (geteuid() != 0) {
		print_message("skipped: the spawner makes sandboxes, which needs root\n");
		return -1;
	}
	struct fixture *f = calloc(1, sizeof(*f));
	snprintf(f->instance, sizeof(f->instance), "ts%02d", (int)(getpid() % 100));
	snprintf(f->data, sizeof(f->data), "/tmp/skiff-test-spawner-%d", (int)getpid());
	/* The holder program is built into ../bin beside this test's directory. */
	ssize_t n = readlink("/proc/self/exe", f->holder, sizeof(f->holder) - 1);
	f->holder[n > 0 ? n : 0] = '\0';
	char *slash = strrchr(f->holder, '/');
	if (slash)
		snprintf(slash, sizeof(f->holder) - (size_t)(slash - f->holder),
		         "/../bin/" STDIN_HOLDER_NAME);
	f->cfg = (struct spawner_config){.instance = f->instance,
	                                 .data_dir = f->data,
	                                 .busybox = getenv(BUSYBOX_PATH_ENV),
	                                 .stdin_holder = f->holder};
	f->fd = -1;
	f->store_lock = -1;
	f->events = json_array();
	*state = f;
	return 0;
}

static int holds_count(struct fixture *f, const char *digest);
static void store_open(struct fixture *f, struct img_store *st);
static void store_close(struct fixture *f, struct img_store *st);

/* Whatever happened: stop the spawner, end every sandbox of the instance, remove it. */
static int teardown(void **state)
{
	struct fixture *f = *state;
	spawner_kill(f);
	/* Counted with the store held: the disk it is on is unmounted below. */
	struct img_store hs;
	store_open(f, &hs);
	int holds_left = 0; /* a tree held by a sandbox that is gone */
	char trees[sizeof(f->data) + 16];
	snprintf(trees, sizeof(trees), "%s/images/trees", f->data);
	DIR *td = opendir(trees);
	struct dirent *de;
	while (td && (de = readdir(td))) {
		size_t len = strlen(de->d_name);
		if (len > 6 && !strcmp(de->d_name + len - 6, ".holds"))
			holds_left += holds_count(f, strndupa(de->d_name, len - 6));
	}
	if (td)
		closedir(td);
	store_close(f, &hs);
	struct rt rt;
	struct sk_error err = {0};
	assert_int_equal(rt_init(&rt, f->instance, NULL, &err), 0);
	struct rt_sandbox_info *list = NULL;
	int n = rt_sandbox_list(&rt, &list, &err);
	int left = 0;
	for (int i = 0; i < n; i++) {
		struct rt_sandbox *sb;
		left++;
		if (rt_sandbox_attach(&rt, list[i].id, &sb, &err) == 0)
			rt_sandbox_destroy(sb, &err);
	}
	free(list);
	rt_gc(&rt, &err);
	struct cg_layout layout = rt.cg;
	int idle = rt_instance_remove_if_idle(&rt);
	rt_release(&rt);
	int cgroups_left = 0;
	for (int i = 0; i < layout.nhier; i++) {
		char path[CG_PATH_BYTES + 32];
		struct stat st;
		snprintf(path, sizeof(path), "%s/skiff-%s", layout.hier[i].mount, f->instance);
		cgroups_left += stat(path, &st) == 0;
	}
	char after[4096];
	run_dir_names(after, sizeof(after));
	char disk[sizeof(f->data) + 8], parent[sizeof(f->data)];
	snprintf(disk, sizeof(disk), "%s/disk", f->data);
	snprintf(parent, sizeof(parent), "%s", f->data);
	struct stat ds, ps;
	int disk_mounted = stat(disk, &ds) == 0 && stat(parent, &ps) == 0 && ds.st_dev != ps.st_dev;
	if (!disk_mounted)
		fs_rm_rf_at(AT_FDCWD, f->data); /* never into a mount left behind */
	json_decref(f->events);
	free(f->buf);
	/* Only this instance's names: other instances (tests run by others on the host) come and
	 * go meanwhile. */
	char mine[2][64], padded[4096 + 2];
	snprintf(mine[0], sizeof(mine[0]), " %s ", f->instance);
	snprintf(mine[1], sizeof(mine[1]), " %s.lock ", f->instance);
	snprintf(padded, sizeof(padded), " %s", after);
	int run_left = !!strstr(padded, mine[0]) + !!strstr(padded, mine[1]);
	free(f);
	assert_int_equal(idle, 1);
	assert_int_equal(disk_mounted, 0);
	assert_int_equal(holds_left, 0);
	assert_int_equal(cgroups_left, 0);
	if (run_left)
		fail_msg("the instance's run directory is left: %s", after);
	assert_int_equal(left, 0); /* every test removed what it made */
	return 0;
}

static void test_bad_requests(void **state)
{
	struct fixture *f = *state;
	spawner_up(f, 0);
	json_t *r = call(f, json_pack("{s:s}", "op", "hello"));
	expect_ok(r);
	assert_int_equal(json_integer_value(json_object_get(r, "version")), 1);
	assert_string_equal(json_string_value(json_object_get(r, "instance")), f->instance);
	assert_int_equal(json_array_size(json_object_get(r, "sandboxes")), 0);
	json_decref(r);

	static const char *const bad[][2] = {
	    {"{\"op\":\"nope\"}", "invalid_argument"},
	    {"{\"op\":42}", "invalid_argument"},
	    {"{\"op\":\"exec\"}", "invalid_argument"},
	    {"{\"op\":\"usage\",\"id\":\"sb-00000000000000000000000000\"}", "not_found"},
	    {"{\"op\":\"create\",\"id\":\"nope\",\"spec\":{}}", "invalid_argument"},
	    {"{\"op\":\"create\",\"id\":\"sb-00000000000000000000000000\",\"spec\":"
	     "{\"rootfs\":\"/\"}}",
	     "invalid_argument"},
	    {"{\"op\":\"create\",\"id\":\"sb-00000000000000000000000000\",\"spec\":"
	     "{\"image\":\"ubuntu\"}}",
	     "invalid_argument"},
	    {"{\"op\":\"create\",\"id\":\"sb-00000000000000000000000000\",\"spec\":"
	     "{\"memory_mib\":\"lots\"}}",
	     "invalid_argument"},
	    {"{\"op\":\"create\",\"id\":\"sb-00000000000000000000000000\",\"spec\":[]}",
	     "invalid_argument"},
	    {"{\"op\":\"terminate\",\"id\":\"sb-00000000000000000000000000\",\"grace_ms\":-1}",
	     "not_found"},
	    {"{\"op\":\"signal\",\"id\":7}", "invalid_argument"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *m = json_loads(bad[i][0], 0, NULL);
		assert_non_null(m);
		r = call(f, m);
		assert_false(is_ok(r));
		assert_string_equal(error_code(r), bad[i][1]);
		json_decref(r);
	}
	/* Not JSON, no req, an oversize frame: answered with req null, and the spawner goes on. */
	const char *junk[] = {"not json", "{\"op\":\"hello\"}", "[1]"};
	for (size_t i = 0; i < 3; i++) {
		send_raw(f, junk[i], strlen(junk[i]));
		r = recv_msg(f);
		assert_true(json_is_null(json_object_get(r, "req")));
		assert_string_equal(error_code(r), "invalid_argument");
		json_decref(r);
	}
	size_t big = SPAWNER_MAX_MSG_BYTES + 10;
	char *huge = malloc(big + 4);
	memset(huge, ' ', big + 4);
	huge[0] = big >> 24, huge[1] = big >> 16, huge[2] = big >> 8, huge[3] = big;
	ssize_t w = 0;
	for (size_t off = 0; off < big + 4; off += (size_t)w) {
		w = write(f->fd, huge + off, big + 4 - off);
		assert_true(w > 0);
		if (off == 0) {
			/* The error comes as soon as the length is read. */
		}
	}
	free(huge);
	r = recv_msg(f);
	assert_true(json_is_null(json_object_get(r, "req")));
	json_decref(r);
	r = call(f, json_pack("{s:s}", "op", "hello"));
	expect_ok(r);
	json_decref(r);
	spawner_down(f);
}

static void test_pool_exec_output(void **state)
{
	struct fixture *f = *state;
	spawner_up(f, 1);
	json_decref(call(f, json_pack("{s:s}", "op", "hello")));
	usleep(500 * 1000); /* the pool fills while the spawner idles */
	char a[ID_MAX_BYTES], b[ID_MAX_BYTES], ex[ID_MAX_BYTES], dir[600], path[700];
	new_id("sb-", a);
	new_id("sb-", b);
	json_t *r = create(f, a, "{\"timeout_s\":0}");
	expect_ok(r);
	assert_true(json_is_true(json_object_get(r, "pooled")));
	json_decref(r);
	r = create(f, a, "{}");
	assert_string_equal(error_code(r), "conflict");
	json_decref(r);
	/* Another disk size, with its own limits: from the pool when it is refilled by now and the
	 * disk is btrfs (a qgroup's limit changes at the start), else made on the spot. */
	r = create(f, b, "{\"disk_mib\":64,\"memory_mib\":64,\"command\":[\"sleep\",\"100\"]}");
	expect_ok(r);
	json_decref(r);

	/* An exec's output goes to files; its end comes with its status. */
	new_id("ex-", ex);
	r = exec_cmd(f, a, ex, "[\"sh\",\"-c\",\"echo hello; echo oops >&2; exit 3\"]");
	expect_ok(r);
	assert_true(json_is_true(json_object_get(r, "started")));
	json_decref(r);
	json_t *e = wait_event(f, "exec_ended", a, ex);
	assert_int_equal(json_integer_value(json_object_get(e, "exit_code")), 3);
	assert_string_equal(json_string_value(json_object_get(e, "state")), "exited");
	json_decref(e);
	state_dir(f, a, dir, sizeof(dir));
	char buf[256];
	snprintf(path, sizeof(path), "%s/execs/%s.stdout", dir, ex);
	assert_int_equal(fs_read_at(AT_FDCWD, path, buf, sizeof(buf)), 6);
	assert_string_equal(buf, "hello\n");
	r = output(f, a, ex, "stderr", 0, buf, sizeof(buf));
	assert_string_equal(buf, "oops\n");
	assert_int_equal(json_integer_value(json_object_get(r, "offset")), 0);
	assert_int_equal(json_integer_value(json_object_get(r, "size")), 5);
	assert_true(json_is_true(json_object_get(r, "eof")));
	json_decref(r);
	r = output(f, a, ex, "stdout", 2, buf, sizeof(buf));
	assert_string_equal(buf, "llo\n");
	json_decref(r);
	r = exec_cmd(f, a, ex, "[\"true\"]");
	assert_string_equal(error_code(r), "conflict");
	json_decref(r);

	/* A command that isn't there: 127, the reason on its stderr. */
	char ex2[ID_MAX_BYTES];
	new_id("ex-", ex2);
	r = exec_cmd(f, a, ex2, "[\"/no/such/thing\"]");
	expect_ok(r);
	assert_true(json_is_false(json_object_get(r, "started")));
	json_decref(r);
	e = wait_event(f, "exec_ended", a, ex2);
	assert_int_equal(json_integer_value(json_object_get(e, "exit_code")), 127);
	json_decref(e);
	json_decref(output(f, a, ex2, "stderr", 0, buf, sizeof(buf)));
	assert_non_null(strstr(buf, "/no/such/thing"));

	/* Large output: only the last SPAWNER_OUTPUT_KEEP_BYTES are kept, offsets stay. */
	char ex3[ID_MAX_BYTES];
	new_id("ex-", ex3);
	r = exec_cmd(f, a, ex3, "[\"sh\",\"-c\",\"head -c 20000000 /dev/zero; echo end\"]");
	expect_ok(r);
	json_decref(r);
	json_decref(wait_event(f, "exec_ended", a, ex3));
	r = output(f, a, ex3, "stdout", 0, buf, 16);
	json_int_t off = json_integer_value(json_object_get(r, "offset"));
	assert_int_equal(json_integer_value(json_object_get(r, "size")), 20000004);
	assert_true(off > 0 && off <= 20000004 - SPAWNER_OUTPUT_KEEP_BYTES);
	assert_true(off >= 20000004 - SPAWNER_OUTPUT_KEEP_BYTES - 4096);
	json_decref(r);
	r = output(f, a, ex3, "stdout", 20000000, buf, sizeof(buf));
	assert_string_equal(buf, "end\n");
	json_decref(r);

	/* A signal to an exec; usage; exec timeouts. */
	char ex4[ID_MAX_BYTES];
	new_id("ex-", ex4);
	json_decref(exec_cmd(f, a, ex4, "[\"sleep\",\"100\"]"));
	r = call(f, json_pack("{s:s, s:s, s:s, s:i}", "op", "signal", "id", a, "exec", ex4,
	                      "signal", SIGUSR1));
	expect_ok(r);
	json_decref(r);
	e = wait_event(f, "exec_ended", a, ex4);
	assert_int_equal(json_integer_value(json_object_get(e, "exit_code")), 128 + SIGUSR1);
	json_decref(e);
	r = call(f, json_pack("{s:s, s:s}", "op", "usage", "id", b));
	expect_ok(r);
	assert_true(json_integer_value(json_object_get(r, "memory_bytes")) > 0);
	json_decref(r);

	remove_sandbox(f, a);
	assert_int_equal(access(dir, F_OK), -1); /* its state and output are gone */
	remove_sandbox(f, b);
	json_t *ended = wait_event(f, "sandbox_ended", b, NULL);
	assert_string_equal(json_string_value(json_object_get(ended, "state")), "terminated");
	json_decref(ended);
	r = call(f, json_pack("{s:s, s:s}", "op", "usage", "id", a));
	assert_string_equal(error_code(r), "not_found");
	json_decref(r);
	spawner_down(f);
}

/* Start a sandbox running script, wait for its end; return the event. */
static json_t *run_to_end(struct fixture *f, const char *spec_json, char *ret_id)
{
	new_id("sb-", ret_id);
	json_t *r = create(f, ret_id, spec_json);
	expect_ok(r);
	json_decref(r);
	return wait_event(f, "sandbox_ended", ret_id, NULL);
}

static void expect_end(json_t *e, const char *state, int code)
{
	assert_string_equal(json_string_value(json_object_get(e, "state")), state);
	assert_int_equal(json_integer_value(json_object_get(e, "exit_code")), code);
	assert_true(json_integer_value(json_object_get(e, "ended_ms")) > 0);
	json_decref(e);
}

static void test_ends(void **state)
{
	struct fixture *f = *state;
	spawner_up(f, 1);
	json_decref(call(f, json_pack("{s:s}", "op", "hello")));
	char id[5][ID_MAX_BYTES], buf[256];
	expect_end(run_to_end(f, "{\"command\":[\"sh\",\"-c\",\"echo out; exit 3\"]}", id[0]),
	           "exited", 3);
	json_t *r = output(f, id[0], NULL, "stdout", 0, buf, sizeof(buf));
	assert_string_equal(buf, "out\n");
	assert_true(json_is_true(json_object_get(r, "eof")));
	json_decref(r);
	expect_end(run_to_end(f, "{\"command\":[\"sh\",\"-c\",\"kill -9 $$\"]}", id[1]), "exited",
	           128 + 9);
	expect_end(run_to_end(f, "{\"command\":[\"sleep\",\"100\"],\"timeout_s\":1}", id[2]),
	           "timeout", 124);
	char oom[ID_MAX_BYTES];
	expect_end(run_to_end(f,
	                      "{\"memory_mib\":16,\"command\":[\"sh\",\"-c\",\"x=$(head -c "
	                      "100000000 /dev/zero | tr '\\\\0' a); echo ${#x}\"]}",
	                      oom),
	           "oom", 137);
	remove_sandbox(f, oom);
	r = call(f, json_pack("{s:s, s:s}", "op", "usage", "id", id[2]));
	expect_ok(r); /* an ended sandbox reports what it used */
	json_decref(r);
	/* An exec into an ended sandbox is refused. */
	char ex[ID_MAX_BYTES];
	new_id("ex-", ex);
	r = exec_cmd(f, id[2], ex, "[\"true\"]");
	assert_string_equal(error_code(r), "conflict");
	json_decref(r);

	/* terminate: SIGTERM, then SIGKILL after the grace; the reply after the event. */
	new_id("sb-", id[3]);
	json_decref(create(f, id[3],
	                   "{\"command\":[\"sh\",\"-c\",\"trap '' TERM; echo ready; while :; do "
	                   "sleep 1; done\"]}"));
	/* Only once the trap is set: a SIGTERM before it would end the shell at once (143). */
	char ready[64] = "";
	for (int i = 0; i < 500 && !strstr(ready, "ready"); i++) {
		json_decref(output(f, id[3], NULL, "stdout", 0, ready, sizeof(ready)));
		if (!strstr(ready, "ready"))
			usleep(10000);
	}
	assert_non_null(strstr(ready, "ready"));
	r = call(f, json_pack("{s:s, s:s, s:i}", "op", "terminate", "id", id[3], "grace_ms", 300));
	expect_ok(r);
	assert_string_equal(json_string_value(json_object_get(r, "state")), "terminated");
	assert_int_equal(json_integer_value(json_object_get(r, "exit_code")), 137);
	json_decref(r);
	expect_end(wait_event(f, "sandbox_ended", id[3], NULL), "terminated", 137);
	/* Without a command: ended once its processes are gone. */
	new_id("sb-", id[4]);
	json_decref(create(f, id[4], "{}"));
	r = call(f, json_pack("{s:s, s:s}", "op", "terminate", "id", id[4]));
	expect_ok(r);
	assert_string_equal(json_string_value(json_object_get(r, "state")), "terminated");
	json_decref(r);
	json_decref(wait_event(f, "sandbox_ended", id[4], NULL));
	for (int i = 0; i < 5; i++)
		remove_sandbox(f, id[i]);
	spawner_down(f);
}

static void test_restart(void **state)
{
	struct fixture *f = *state;
	spawner_up(f, 1);
	json_decref(call(f, json_pack("{s:s}", "op", "hello")));
	char run[ID_MAX_BYTES], done[ID_MAX_BYTES], ex[ID_MAX_BYTES], buf[256];
	new_id("sb-", run);
	json_t *r = create(f, run, "{}");
	expect_ok(r);
	json_decref(r);
	expect_end(run_to_end(f, "{\"command\":[\"sh\",\"-c\",\"exit 5\"]}", done), "exited", 5);
	spawner_down(f);

	/* A new spawner on the same instance finds both. */
	spawner_up(f, 1);
	r = call(f, json_pack("{s:s}", "op", "hello"));
	expect_ok(r);
	json_t *list = json_object_get(r, "sandboxes");
	assert_int_equal(json_array_size(list), 2);
	size_t i;
	json_t *s;
	json_array_foreach (list, i, s) {
		const char *sid = json_string_value(json_object_get(s, "id"));
		const char *st = json_string_value(json_object_get(s, "state"));
		if (!strcmp(sid, run)) {
			assert_string_equal(st, "running");
		} else {
			assert_string_equal(sid, done);
			assert_string_equal(st, "exited");
			assert_int_equal(json_integer_value(json_object_get(s, "exit_code")), 5);
		}
	}
	json_decref(r);
	new_id("ex-", ex);
	r = exec_cmd(f, run, ex, "[\"sh\",\"-c\",\"echo again\"]");
	expect_ok(r);
	json_decref(r);
	json_t *e = wait_event(f, "exec_ended", run, ex);
	assert_int_equal(json_integer_value(json_object_get(e, "exit_code")), 0);
	json_decref(e);
	json_decref(output(f, run, ex, "stdout", 0, buf, sizeof(buf)));
	assert_string_equal(buf, "again\n");
	remove_sandbox(f, run);
	remove_sandbox(f, done);
	spawner_down(f);
}

/* ---- file operations ---- */

static json_t *fcall(struct fixture *f, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	json_t *m = json_vpack_ex(NULL, 0, fmt, ap);
	va_end(ap);
	assert_non_null(m);
	return call(f, m);
}

static void expect_code(json_t *reply, const char *code)
{
	if (is_ok(reply) || strcmp(error_code(reply), code)) {
		char *t = json_dumps(reply, 0);
		fail_msg("expected %s, got %s", code, t);
	}
	json_decref(reply);
}

static json_t *fwrite_at(struct fixture *f, const char *id, const char *path, const void *data,
                         size_t len, long long offset, int truncate)
{
	char *b64 = malloc(base64_encoded_size(len));
	base64_encode(data, len, b64);
	json_t *r =
	    fcall(f, "{s:s, s:s, s:s, s:s, s:I, s:b}", "op", "file_write", "id", id, "path", path,
	          "data_b64", b64, "offset", (json_int_t)offset, "truncate", truncate);
	free(b64);
	return r;
}

/* file_read's data into buf (NUL-terminated); returns the reply, *ret_n the byte count. */
static json_t *fread_at(struct fixture *f, const char *id, const char *path, long long offset,
                        size_t max, char *buf, size_t size, size_t *ret_n)
{
	json_t *r = fcall(f, "{s:s, s:s, s:s, s:I, s:I}", "op", "file_read", "id", id, "path", path,
	                  "offset", (json_int_t)offset, "max", (json_int_t)max);
	if (!is_ok(r))
		return r;
	const char *b64 = json_string_value(json_object_get(r, "data_b64"));
	assert_non_null(b64);
	assert_true(strlen(b64) / 4 * 3 < size);
	long n = base64_decode(b64, strlen(b64), (unsigned char *)buf);
	assert_true(n >= 0);
	buf[n] = '\0';
	if (ret_n)
		*ret_n = (size_t)n;
	return r;
}

/* Run a shell command in the sandbox, its stdout into buf. */
static void sh(struct fixture *f, const char *id, const char *script, char *buf, size_t size)
{
	char ex[ID_MAX_BYTES];
	new_id("ex-", ex);
	json_t *cmd = json_pack("[s, s, s]", "sh", "-c", script);
	json_t *r = call(f, json_pack("{s:s, s:s, s:s, s:o}", "op", "exec", "id", id, "exec", ex,
	                              "command", cmd));
	expect_ok(r);
	json_decref(r);
	json_t *e = wait_event(f, "exec_ended", id, ex);
	assert_int_equal(json_integer_value(json_object_get(e, "exit_code")), 0);
	json_decref(e);
	json_decref(output(f, id, ex, "stdout", 0, buf, size));
}

static const char *entry_str(json_t *entry, const char *key)
{
	const char *v = json_string_value(json_object_get(entry, key));
	return v ? v : "(null)";
}

static void test_files(void **state)
{
	struct fixture *f = *state;
	spawner_up(f, 0);
	json_decref(call(f, json_pack("{s:s}", "op", "hello")));
	char a[ID_MAX_BYTES], buf[4096], buf2[4096];
	new_id("sb-", a);
	json_t *r = create(f, a, "{}");
	expect_ok(r);
	json_decref(r);

	/* Every byte value, written in three chunks at offsets, read back in three. */
	unsigned char bytes[256];
	for (int i = 0; i < 256; i++)
		bytes[i] = (unsigned char)i;
	r = fcall(f, "{s:s, s:s, s:s, s:s, s:b, s:i, s:b}", "op", "file_write", "id", a, "path",
	          "/data/sub/bin", "data_b64", "AAEC", "truncate", 1, "mode", 0640, "parents", 1);
	expect_ok(r);
	json_decref(r);
	long long sizes[3] = {100, 200, 256};
	for (int c = 0; c < 3; c++) {
		size_t from = (size_t)c * 100, len = c < 2 ? 100 : 56;
		r = fwrite_at(f, a, "/data/sub/bin", bytes + from, len, (long long)from, c == 0);
		expect_ok(r);
		assert_int_equal(json_integer_value(json_object_get(r, "size")), sizes[c]);
		json_decref(r);
	}
	for (int c = 0; c < 3; c++) {
		size_t n = 0;
		r = fread_at(f, a, "/data/sub/bin", c * 100, 100, buf, sizeof(buf), &n);
		expect_ok(r);
		assert_int_equal(n, c < 2 ? 100 : 56);
		assert_memory_equal(buf, bytes + c * 100, n);
		assert_int_equal(json_integer_value(json_object_get(r, "size")), 256);
		assert_int_equal(json_is_true(json_object_get(r, "eof")), c == 2);
		json_decref(r);
	}
	/* Owned by the sandbox's root, as seen from inside; the mode as asked. */
	sh(f, a, "stat -c '%u:%g:%a' /data/sub/bin /data/sub /data", buf, sizeof(buf));
	assert_string_equal(buf, "0:0:640\n0:0:755\n0:0:755\n");

	/* stat and list: types, sizes, modes, symlink targets; listing never follows links. */
	sh(f, a,
	   "ln -s /etc/passwd /data/link && ln -s /proc/1/root/etc/shadow /data/shadow && "
	   "ln -s /proc/self/root /data/self && ln -s ../../../../../etc /data/sub/up && "
	   "ln -s / /tmp/out && mkfifo /data/fifo",
	   buf, sizeof(buf));
	r = fcall(f, "{s:s, s:s, s:s}", "op", "fs_stat", "id", a, "path", "/data//sub/./bin");
	expect_ok(r);
	json_t *e = json_object_get(r, "entry");
	assert_string_equal(entry_str(e, "name"), "bin");
	assert_string_equal(entry_str(e, "path"), "/data/sub/bin");
	assert_string_equal(entry_str(e, "type"), "file");
	assert_int_equal(json_integer_value(json_object_get(e, "size")), 256);
	assert_int_equal(json_integer_value(json_object_get(e, "mode")), 0640);
	assert_true(json_is_null(json_object_get(e, "link_target")));
	assert_int_equal(strlen(entry_str(e, "mtime")), 24);
	json_decref(r);
	r = fcall(f, "{s:s, s:s, s:s}", "op", "fs_stat", "id", a, "path", "/data/link");
	expect_ok(r);
	e = json_object_get(r, "entry");
	assert_string_equal(entry_str(e, "type"), "symlink");
	assert_string_equal(entry_str(e, "link_target"), "/etc/passwd");
	json_decref(r);
	r = fcall(f, "{s:s, s:s, s:s, s:i}", "op", "fs_list", "id", a, "path", "/data", "depth", 2);
	expect_ok(r);
	static const char *const want[][3] = {
	    {"/data/fifo", "other", ""},
	    {"/data/link", "symlink", "/etc/passwd"},
	    {"/data/self", "symlink", "/proc/self/root"},
	    {"/data/shadow", "symlink", "/proc/1/root/etc/shadow"},
	    {"/data/sub", "dir", ""},
	    {"/data/sub/bin", "file", ""},
	    {"/data/sub/up", "symlink", "../../../../../etc"},
	};
	json_t *list = json_object_get(r, "entries");
	assert_int_equal(json_array_size(list), ARRAY_SIZE(want));
	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		e = json_array_get(list, i);
		assert_string_equal(entry_str(e, "path"), want[i][0]);
		assert_string_equal(entry_str(e, "type"), want[i][1]);
		if (want[i][2][0])
			assert_string_equal(entry_str(e, "link_target"), want[i][2]);
	}
	assert_true(json_is_false(json_object_get(r, "truncated")));
	json_decref(r);
	r = fcall(f, "{s:s, s:s, s:s}", "op", "fs_list", "id", a, "path", "/data");
	expect_ok(r);
	assert_int_equal(json_array_size(json_object_get(r, "entries")), 5); /* depth 1 */
	json_decref(r);

	/* Escapes: "..", absolute and climbing symlinks resolve inside the root; magic links are
	 * refused. The sandbox's /etc/passwd is not the host's. */
	size_t n0 = 0, n = 0;
	r = fread_at(f, a, "/etc/passwd", 0, 4096, buf, sizeof(buf), &n0);
	expect_ok(r);
	json_decref(r);
	assert_non_null(strstr(buf, "root:x:0:0:"));
	char host[4096];
	ssize_t hn = fs_read_at(AT_FDCWD, "/etc/passwd", host, sizeof(host));
	assert_true(hn > 0);
	assert_true((size_t)hn != n0 || memcmp(host, buf, n0) != 0);
	const char *same[] = {"/../../etc/passwd", "/data/link", "/data/sub/up/passwd",
	                      "/tmp/out/etc/passwd", "/data/sub/../../../etc/passwd"};
	for (size_t i = 0; i < ARRAY_SIZE(same); i++) {
		r = fread_at(f, a, same[i], 0, 4096, buf2, sizeof(buf2), &n);
		expect_ok(r);
		json_decref(r);
		assert_int_equal(n, n0);
		assert_memory_equal(buf2, buf, n0);
	}
	r = fread_at(f, a, "/data/shadow", 0, 4096, buf2, sizeof(buf2), NULL);
	assert_false(is_ok(r));
	json_decref(r);
	r = fread_at(f, a, "/data/self/etc/passwd", 0, 4096, buf2, sizeof(buf2), NULL);
	assert_false(is_ok(r));
	json_decref(r);
	expect_code(fread_at(f, a, "/proc/1/root/etc/passwd", 0, 16, buf2, sizeof(buf2), NULL),
	            "invalid_argument");
	/* A write through a symlinked parent (/tmp/out -> /) lands at the sandbox's /x. */
	int host_x = access("/x", F_OK) == 0;
	r = fwrite_at(f, a, "/tmp/out/x", "hello", 5, 0, 1);
	expect_ok(r);
	json_decref(r);
	json_decref(fread_at(f, a, "/x", 0, 100, buf2, sizeof(buf2), NULL));
	assert_string_equal(buf2, "hello");
	assert_int_equal(access("/x", F_OK) == 0, host_x);
	/* Through an absolute symlink to a file: the sandbox's file, not the host's. */
	r = fwrite_at(f, a, "/data/shadow", "x", 1, 0, 1);
	assert_false(is_ok(r));
	json_decref(r);
	/* Not files: a directory, a FIFO (never opened: it would block). */
	expect_code(fwrite_at(f, a, "/data", "x", 1, 0, 0), "invalid_argument");
	expect_code(fread_at(f, a, "/data", 0, 16, buf2, sizeof(buf2), NULL), "invalid_argument");
	expect_code(fread_at(f, a, "/data/fifo", 0, 16, buf2, sizeof(buf2), NULL),
	            "invalid_argument");
	expect_code(fwrite_at(f, a, "/data/fifo", "x", 1, 0, 0), "invalid_argument");
	expect_code(fread_at(f, a, "/nope", 0, 16, buf2, sizeof(buf2), NULL), "not_found");

	/* mkdir, move, remove. */
	r = fcall(f, "{s:s, s:s, s:s, s:b}", "op", "fs_mkdir", "id", a, "path", "/m/a/b", "parents",
	          1);
	expect_ok(r);
	json_decref(r);
	r = fcall(f, "{s:s, s:s, s:s, s:b}", "op", "fs_mkdir", "id", a, "path", "/m/a/b", "parents",
	          1);
	expect_ok(r); /* -p: there already */
	json_decref(r);
	expect_code(fcall(f, "{s:s, s:s, s:s}", "op", "fs_mkdir", "id", a, "path", "/m/a"),
	            "conflict");
	expect_code(fcall(f, "{s:s, s:s, s:s}", "op", "fs_mkdir", "id", a, "path", "/n/x"),
	            "not_found");
	expect_code(fcall(f, "{s:s, s:s, s:s, s:b}", "op", "fs_mkdir", "id", a, "path",
	                  "/data/sub/bin/x", "parents", 1),
	            "conflict");
	r = fcall(f, "{s:s, s:s, s:s, s:s}", "op", "fs_move", "id", a, "from", "/data/sub/bin",
	          "to", "/m/a/b/bin2");
	expect_ok(r);
	json_decref(r);
	expect_code(fcall(f, "{s:s, s:s, s:s}", "op", "fs_stat", "id", a, "path", "/data/sub/bin"),
	            "not_found");
	r = fcall(f, "{s:s, s:s, s:s}", "op", "fs_stat", "id", a, "path", "/m/a/b/bin2");
	expect_ok(r);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "entry"), "size")),
	                 256);
	json_decref(r);
	expect_code(fcall(f, "{s:s, s:s, s:s, s:s}", "op", "fs_move", "id", a, "from", "/x", "to",
	                  "/m/a/b/bin2"),
	            "conflict");
	expect_code(fcall(f, "{s:s, s:s, s:s, s:s}", "op", "fs_move", "id", a, "from", "/nope",
	                  "to", "/m/nope"),
	            "not_found");
	expect_code(
	    fcall(f, "{s:s, s:s, s:s, s:s}", "op", "fs_move", "id", a, "from", "/x", "to", "/m/.."),
	    "invalid_argument");
	expect_code(fcall(f, "{s:s, s:s, s:s}", "op", "fs_remove", "id", a, "path", "/m"),
	            "conflict");
	r = fcall(f, "{s:s, s:s, s:s, s:b}", "op", "fs_remove", "id", a, "path", "/m", "recursive",
	          1);
	expect_ok(r);
	json_decref(r);
	expect_code(fcall(f, "{s:s, s:s, s:s}", "op", "fs_stat", "id", a, "path", "/m"),
	            "not_found");
	/* A symlink is removed, not what it points at. */
	r = fcall(f, "{s:s, s:s, s:s, s:b}", "op", "fs_remove", "id", a, "path", "/tmp/out",
	          "recursive", 1);
	expect_ok(r);
	json_decref(r);
	r = fcall(f, "{s:s, s:s, s:s}", "op", "fs_remove", "id", a, "path", "/x");
	expect_ok(r);
	json_decref(r);
	expect_code(fcall(f, "{s:s, s:s, s:s}", "op", "fs_remove", "id", a, "path", "/x"),
	            "not_found");
	expect_code(fcall(f, "{s:s, s:s, s:s, s:b}", "op", "fs_remove", "id", a, "path", "/",
	                  "recursive", 1),
	            "invalid_argument");
	r = fread_at(f, a, "/etc/passwd", 0, 16, buf2, sizeof(buf2), NULL);
	expect_ok(r); /* still there */
	json_decref(r);

	/* A large directory: fs_list stops at SP_FILES_MAX_LIST_ENTRIES; removed in one go. */
	sh(f, a, "mkdir /big && cd /big && seq 10050 | xargs touch && ls | wc -l", buf,
	   sizeof(buf));
	assert_string_equal(buf, "10050\n");
	r = fcall(f, "{s:s, s:s, s:s, s:i}", "op", "fs_list", "id", a, "path", "/", "depth", 16);
	expect_ok(r);
	assert_int_equal(json_array_size(json_object_get(r, "entries")), SP_FILES_MAX_LIST_ENTRIES);
	assert_true(json_is_true(json_object_get(r, "truncated")));
	json_decref(r);
	r = fcall(f, "{s:s, s:s, s:s, s:b}", "op", "fs_remove", "id", a, "path", "/big",
	          "recursive", 1);
	expect_ok(r);
	json_decref(r);

	/* Bad requests change nothing and leave the spawner up. */
	expect_code(fcall(f, "{s:s, s:s}", "op", "file_read", "id", a), "invalid_argument");
	expect_code(fcall(f, "{s:s, s:s, s:s}", "op", "file_read", "id", a, "path", "etc/passwd"),
	            "invalid_argument");
	expect_code(
	    fcall(f, "{s:s, s:s, s:s%}", "op", "file_read", "id", a, "path", "/etc\0x", (size_t)6),
	    "invalid_argument");
	expect_code(fcall(f, "{s:s, s:s, s:s, s:I}", "op", "file_read", "id", a, "path",
	                  "/etc/passwd", "max", (json_int_t)(2 << 20)),
	            "invalid_argument");
	expect_code(
	    fcall(f, "{s:s, s:s, s:s, s:i}", "op", "fs_list", "id", a, "path", "/", "depth", 17),
	    "invalid_argument");
	expect_code(fcall(f, "{s:s, s:s, s:s, s:s}", "op", "file_write", "id", a, "path", "/y",
	                  "data_b64", "!!"),
	            "invalid_argument");
	expect_code(fcall(f, "{s:s, s:s, s:s, s:i}", "op", "file_write", "id", a, "path", "/y",
	                  "mode", 04755),
	            "invalid_argument");
	expect_code(fcall(f, "{s:s, s:s, s:s, s:s}", "op", "file_write", "id", a, "path", "/y",
	                  "truncate", "yes"),
	            "invalid_argument");
	expect_code(fcall(f, "{s:s, s:s, s:s}", "op", "fs_stat", "id",
	                  "sb-00000000000000000000000000", "path", "/"),
	            "not_found");
	expect_code(fcall(f, "{s:s, s:s, s:s}", "op", "fs_stat", "id", a, "path", "/y"),
	            "not_found");

	/* Only running sandboxes. */
	char b[ID_MAX_BYTES];
	json_decref(run_to_end(f, "{\"command\":[\"true\"]}", b));
	expect_code(fcall(f, "{s:s, s:s, s:s}", "op", "file_read", "id", b, "path", "/etc/passwd"),
	            "conflict");
	remove_sandbox(f, a);
	remove_sandbox(f, b);
	spawner_down(f);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The spawner's file helpers (comm SP_FILES_HELPER_NAME, its children): how many, and the pid
 * of the first that has confined itself (seccomp on) other than not_pid, its status (and only
 * its: other helpers may still be entering) into status. */
static int helpers_find(struct fixture *f, pid_t not_pid, pid_t *ret_pid, char *status, size_t size)
{
	int count = 0;
	*ret_pid = 0;
	DIR *d = opendir("/proc");
	assert_non_null(d);
	struct dirent *de;
	while ((de = readdir(d))) {
		char path[300], text[1024];
		char *end;
		long pid = strtol(de->d_name, &end, 10);
		if (*end || pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
		ssize_t n = fs_read_at(AT_FDCWD, path, text, sizeof(text) - 1);
		if (n <= 0)
			continue;
		text[n] = '\0';
		char *open = strchr(text, '('), *close = strrchr(text, ')');
		if (!open || !close || close - open - 1 != (long)strlen(SP_FILES_HELPER_NAME) ||
		    memcmp(open + 1, SP_FILES_HELPER_NAME, strlen(SP_FILES_HELPER_NAME)) ||
		    strtol(close + 4, NULL, 10) != f->pid)
			continue;
		count++;
		if (*ret_pid || pid == not_pid)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/status", pid);
		n = fs_read_at(AT_FDCWD, path, status, size - 1);
		status[n > 0 ? n : 0] = '\0';
		if (n > 0 && strstr(status, "\nSeccomp:\t2\n"))
			*ret_pid = (pid_t)pid;
	}
	closedir(d);
	return count;
}

/* Wait (up to 9 s, within the op's deadline) for a confined helper other than not_pid; 0 when
 * none came (a loaded host: the helper gets a sliver of a sliver). */
static pid_t helper_wait(struct fixture *f, pid_t not_pid, char *status, size_t size)
{
	pid_t pid = 0;
	int n = 0;
	for (int i = 0; i < 450 && !pid; i++) {
		n = helpers_find(f, not_pid, &pid, status, size);
		if (!pid)
			usleep(20 * 1000);
	}
	if (!pid)
		print_message("no confined file helper within 9 s (%d helpers)\n", n);
	return pid;
}

/* Send a slow walk of a's root, retried until its helper is seen confined; *ret_req its req. */
static pid_t slow_op_start(struct fixture *f, const char *a, int *ret_req, int64_t *ret_t0,
                           char *status, size_t size)
{
	for (int attempt = 0; attempt < 3; attempt++) {
		*ret_t0 = mono_ms();
		*ret_req = send_req(f, json_pack("{s:s, s:s, s:s, s:i}", "op", "fs_list", "id", a,
		                                 "path", "/", "depth", 16));
		pid_t pid = helper_wait(f, 0, status, size);
		if (pid)
			return pid;
		json_decref(wait_reply(f, *ret_req));
	}
	fail_msg("no confined file helper in 3 tries");
	return 0;
}

static unsigned long long status_hex(const char *status, const char *key)
{
	const char *p = strstr(status, key);
	assert_non_null(p);
	return strtoull(p + strlen(key), NULL, 16);
}

#define PROMPT_MS 1000

/* File ops against a sandbox that gets a sliver of CPU and spends it spinning: they never hold
 * up other sandboxes' requests, are bounded in time and number, end with their sandbox, and
 * their helper holds no more than the sandbox's own processes. */
static void helper_check(pid_t helper, const char *status)
{
	/* The sandbox's capabilities, no_new_privs, seccomp; none of the spawner's sockets or
	 * pidfds. */
	unsigned long long mask = caps_default_mask();
	assert_int_equal(status_hex(status, "\nCapEff:\t"), mask);
	assert_int_equal(status_hex(status, "\nCapPrm:\t"), mask);
	assert_int_equal(status_hex(status, "\nCapBnd:\t"), mask);
	assert_int_equal(status_hex(status, "\nCapInh:\t"), 0);
	assert_non_null(strstr(status, "\nNoNewPrivs:\t1\n"));
	char fddir[64];
	snprintf(fddir, sizeof(fddir), "/proc/%d/fd", (int)helper);
	DIR *d = opendir(fddir);
	assert_non_null(d);
	struct dirent *de;
	while ((de = readdir(d))) {
		char path[400], target[256] = "";
		snprintf(path, sizeof(path), "%s/%s", fddir, de->d_name);
		if (de->d_name[0] == '.' || readlink(path, target, sizeof(target) - 1) < 0)
			continue;
		if (!strncmp(target, "socket:", 7) || strstr(target, "pidfd"))
			fail_msg("the helper holds %s", target);
	}
	closedir(d);
}

#define SPIN(n)                                                                                    \
	"{\"cpu\":0.01,\"command\":[\"sh\",\"-c\",\"for i in " n " ; do while :; do :; done & "    \
	"done; wait\"]}"

/* File ops against sandboxes that get a sliver of CPU and spend it spinning: they never hold
 * up other sandboxes' requests, are bounded in time and number, end with their sandbox, and
 * their helper holds no more than the sandbox's own processes. */
static void test_files_async(void **state)
{
	struct fixture *f = *state;
	spawner_up(f, 0);
	json_decref(call(f, json_pack("{s:s}", "op", "hello")));
	char a[ID_MAX_BYTES], b[ID_MAX_BYTES], c[ID_MAX_BYTES], d[ID_MAX_BYTES], ex[ID_MAX_BYTES];
	char status[4096];
	new_id("sb-", a);
	new_id("sb-", b);
	new_id("sb-", c);
	new_id("sb-", d);
	json_t *r = create(f, a, SPIN("1 2 3 4 5 6 7 8"));
	expect_ok(r);
	json_decref(r);
	r = create(f, b, "{}");
	expect_ok(r);
	json_decref(r);

	/* A slow walk in a: it runs (a has no other op) while the rest is asked. */
	int64_t t0 = mono_ms();
	int slow = send_req(f, json_pack("{s:s, s:s, s:s, s:i}", "op", "fs_list", "id", a, "path",
	                                 "/", "depth", 16));

	/* Meanwhile other sandboxes are served at once. */
	int64_t t = mono_ms();
	new_id("ex-", ex);
	r = exec_cmd(f, b, ex, "[\"true\"]");
	expect_ok(r);
	json_decref(r);
	assert_true(mono_ms() - t < PROMPT_MS);
	json_decref(wait_event(f, "exec_ended", b, ex));
	t = mono_ms();
	r = create(f, c, "{}");
	expect_ok(r);
	json_decref(r);
	assert_true(mono_ms() - t < PROMPT_MS);

	/* SP_FILES_MAX_QUEUED wait behind the running one; one more is refused at once. */
	int queued[SP_FILES_MAX_QUEUED];
	int64_t tq = mono_ms();
	for (int i = 0; i < SP_FILES_MAX_QUEUED; i++)
		queued[i] = send_req(
		    f, json_pack("{s:s, s:s, s:s}", "op", "fs_stat", "id", a, "path", "/etc"));
	t = mono_ms();
	expect_code(fcall(f, "{s:s, s:s, s:s}", "op", "fs_stat", "id", a, "path", "/etc"),
	            "resource_exhausted");
	assert_true(mono_ms() - t < PROMPT_MS);
	r = fcall(f, "{s:s, s:s, s:s}", "op", "fs_stat", "id", b, "path", "/etc");
	expect_ok(r); /* another sandbox's queue */
	json_decref(r);

	/* The slow one is answered by its deadline, done or not; so is every queued one. */
	r = wait_reply(f, slow);
	assert_true(mono_ms() - t0 < SP_FILES_TIMEOUT_MS + 1500);
	if (!is_ok(r))
		assert_string_equal(error_code(r), "internal");
	json_decref(r);
	for (int i = 0; i < SP_FILES_MAX_QUEUED; i++) {
		r = wait_reply(f, queued[i]);
		if (!is_ok(r))
			assert_string_equal(error_code(r), "internal");
		json_decref(r);
	}
	assert_true(mono_ms() - tq < SP_FILES_TIMEOUT_MS + 1500);

	/* In d (one spinner: its helper gets along faster than in a), a helper seen at work holds
	 * what the sandbox's processes hold. Terminate answers its op at once and ends d. */
	r = create(f, d, SPIN("1"));
	expect_ok(r);
	json_decref(r);
	pid_t helper = slow_op_start(f, d, &slow, &t0, status, sizeof(status));
	helper_check(helper, status);
	t = mono_ms();
	int term =
	    send_req(f, json_pack("{s:s, s:s, s:i}", "op", "terminate", "id", d, "grace_ms", 0));
	expect_code(wait_reply(f, slow), "conflict");
	assert_true(mono_ms() - t < PROMPT_MS);
	r = wait_reply(f, term);
	expect_ok(r);
	assert_string_equal(json_string_value(json_object_get(r, "state")), "terminated");
	json_decref(r);
	expect_code(fcall(f, "{s:s, s:s, s:s}", "op", "fs_stat", "id", d, "path", "/"), "conflict");
	remove_sandbox(f, a);
	remove_sandbox(f, b);
	remove_sandbox(f, c);
	remove_sandbox(f, d);
	/* Each request was answered once. */
	size_t i;
	json_t *m;
	json_array_foreach (f->events, i, m)
		assert_null(json_object_get(m, "req"));
	spawner_down(f);
}

/* ---- stdin and terminals ---- */

/* Start an exec with extra request fields (a JSON object's text); expects it started. */
static void exec_with(struct fixture *f, const char *id, const char *ex, const char *cmd_json,
                      const char *extra_json)
{
	json_t *m = json_loads(extra_json, 0, NULL);
	assert_non_null(m);
	json_object_set_new(m, "op", json_string("exec"));
	json_object_set_new(m, "id", json_string(id));
	json_object_set_new(m, "exec", json_string(ex));
	json_object_set_new(m, "command", json_loads(cmd_json, 0, NULL));
	json_t *r = call(f, m);
	expect_ok(r);
	assert_true(json_is_true(json_object_get(r, "started")));
	json_decref(r);
}

static int stdin_send(struct fixture *f, const char *id, const char *ex, const void *data,
                      size_t len, int eof)
{
	char *b64 = malloc(base64_encoded_size(len));
	base64_encode(data, len, b64);
	int req = send_req(f, json_pack("{s:s, s:s, s:s, s:s, s:b}", "op", "stdin", "id", id,
	                                "exec", ex, "data_b64", b64, "eof", eof));
	free(b64);
	return req;
}

/* Write and wait for the answer; expects len bytes written. */
static void stdin_write(struct fixture *f, const char *id, const char *ex, const void *data,
                        size_t len, int eof)
{
	json_t *r = wait_reply(f, stdin_send(f, id, ex, data, len, eof));
	expect_ok(r);
	assert_int_equal(json_integer_value(json_object_get(r, "written")), (json_int_t)len);
	assert_int_equal(json_is_true(json_object_get(r, "eof")), eof);
	json_decref(r);
}

/* An exec's whole stdout so far (up to size bytes); returns its length. */
static size_t stdout_all(struct fixture *f, const char *id, const char *ex, unsigned char *buf,
                         size_t size)
{
	size_t got = 0;
	for (;;) {
		json_t *r =
		    call(f, json_pack("{s:s, s:s, s:s, s:s, s:I}", "op", "output", "id", id, "exec",
		                      ex, "stream", "stdout", "offset", (json_int_t)got));
		expect_ok(r);
		const char *b64 = json_string_value(json_object_get(r, "data_b64"));
		assert_true(strlen(b64) / 4 * 3 <= size - got);
		long n = base64_decode(b64, strlen(b64), buf + got);
		json_decref(r);
		assert_true(n >= 0);
		if (n == 0)
			return got;
		got += (size_t)n;
	}
}

/* Poll an exec's stdout until it holds text (a terminal's output comes when it comes). */
static void stdout_wait_for(struct fixture *f, const char *id, const char *ex, const char *text)
{
	static unsigned char buf[1 << 16];
	int64_t until = mono_ms() + WAIT_MS;
	for (;;) {
		size_t n = stdout_all(f, id, ex, buf, sizeof(buf) - 1);
		buf[n] = '\0';
		if (strstr((char *)buf, text))
			return;
		if (mono_ms() > until)
			fail_msg("\"%s\" not in the output of %s: \"%s\"", text, ex, buf);
		usleep(20000);
	}
}

/* Live holder processes of this instance's sandboxes. */
static int holders(struct fixture *f)
{
	char key[32];
	snprintf(key, sizeof(key), "/skiff-%s/", f->instance);
	int n = 0;
	DIR *d = opendir("/proc");
	struct dirent *de;
	while (d && (de = readdir(d))) {
		char path[300], text[4096];
		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		snprintf(path, sizeof(path), "/proc/%s/comm", de->d_name);
		if (fs_read_at(AT_FDCWD, path, text, sizeof(text)) <= 0 ||
		    strcmp(text, STDIN_HOLDER_NAME "\n"))
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
		if (fs_read_at(AT_FDCWD, path, text, sizeof(text)) <= 0 ||
		    strrchr(text, ')')[2] == 'Z')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/cgroup", de->d_name);
		if (fs_read_at(AT_FDCWD, path, text, sizeof(text)) > 0 && strstr(text, key))
			n++;
	}
	if (d)
		closedir(d);
	return n;
}

static void holders_expect(struct fixture *f, int want)
{
	int64_t until = mono_ms() + 3000;
	while (holders(f) != want && mono_ms() < until)
		usleep(10000);
	assert_int_equal(holders(f), want);
}

static void test_stdin(void **state)
{
	struct fixture *f = *state;
	spawner_up(f, 1);
	json_decref(call(f, json_pack("{s:s}", "op", "hello")));
	char sb[ID_MAX_BYTES], ex[ID_MAX_BYTES], plain[ID_MAX_BYTES];
	new_id("sb-", sb);
	json_t *r = create(f, sb, "{}");
	expect_ok(r);
	json_decref(r);

	/* cat: several writes, more than a pipe holds, every byte value, then EOF. */
	new_id("ex-", ex);
	exec_with(f, sb, ex, "[\"cat\"]", "{\"stdin\":true}");
	holders_expect(f, 1);
	size_t big = 200 * 1024, total = 0;
	unsigned char *sent = malloc(big + 64), *got = malloc(big + 64);
	for (size_t i = 0; i < big; i++)
		sent[i] = (unsigned char)(i * 7 + i / 256);
	stdin_write(f, sb, ex, "head:", 5, 0);
	memcpy(got, "head:", 5);
	stdin_write(f, sb, ex, sent, big, 0);
	memcpy(got + 5, sent, big);
	stdin_write(f, sb, ex, "\0tail", 5, 1);
	memcpy(got + 5 + big, "\0tail", 5);
	total = big + 10;
	json_t *e = wait_event(f, "exec_ended", sb, ex);
	assert_int_equal(json_integer_value(json_object_get(e, "exit_code")), 0);
	json_decref(e);
	assert_int_equal(stdout_all(f, sb, ex, sent, big + 64), total);
	assert_memory_equal(sent, got, total);
	free(sent);
	free(got);
	holders_expect(f, 0);
	/* Ended: writes are refused. */
	expect_code(wait_reply(f, stdin_send(f, sb, ex, "x", 1, 0)), "conflict");

	/* EOF alone; a write after it. */
	new_id("ex-", ex);
	exec_with(f, sb, ex, "[\"sh\",\"-c\",\"cat >/dev/null; echo eof-seen; sleep 30\"]",
	          "{\"stdin\":true}");
	stdin_write(f, sb, ex, "", 0, 1);
	stdout_wait_for(f, sb, ex, "eof-seen");
	expect_code(wait_reply(f, stdin_send(f, sb, ex, "x", 1, 0)), "conflict");
	expect_code(wait_reply(f, stdin_send(f, sb, ex, "", 0, 1)), "conflict");

	/* Without stdin; bad requests. */
	new_id("ex-", plain);
	exec_with(f, sb, plain, "[\"sleep\",\"30\"]", "{}");
	expect_code(wait_reply(f, stdin_send(f, sb, plain, "x", 1, 0)), "conflict");
	expect_code(fcall(f, "{s:s, s:s, s:s, s:i, s:i}", "op", "resize", "id", sb, "exec", plain,
	                  "rows", 10, "cols", 10),
	            "conflict");
	expect_code(fcall(f, "{s:s, s:s, s:s, s:s}", "op", "stdin", "id", sb, "exec",
	                  "ex-00000000000000000000000000", "data_b64", ""),
	            "not_found");
	expect_code(fcall(f, "{s:s, s:s, s:s, s:s, s:s}", "op", "stdin", "id", sb, "exec", ex,
	                  "data_b64", "", "eof", "yes"),
	            "invalid_argument");
	expect_code(fcall(f, "{s:s, s:s, s:s, s:s}", "op", "exec", "id", sb, "exec",
	                  "ex-00000000000000000000000001", "command", "[]"),
	            "invalid_argument");
	expect_code(fcall(f, "{s:s, s:s, s:s, s:[s], s:s}", "op", "exec", "id", sb, "exec",
	                  "ex-00000000000000000000000001", "command", "true", "stdin", "yes"),
	            "invalid_argument");
	expect_code(fcall(f, "{s:s, s:s, s:s, s:[s], s:{s:i, s:i}}", "op", "exec", "id", sb, "exec",
	                  "ex-00000000000000000000000001", "command", "true", "pty_size", "rows",
	                  10, "cols", 10),
	            "invalid_argument"); /* without pty */

	/* A write that waits for room; another meanwhile is refused; the exec's end answers
	 * the one waiting. */
	new_id("ex-", ex);
	exec_with(f, sb, ex, "[\"sleep\",\"30\"]", "{\"stdin\":true}");
	unsigned char *lots = calloc(1, SP_STDIN_MAX_WRITE_BYTES);
	int pending = stdin_send(f, sb, ex, lots, SP_STDIN_MAX_WRITE_BYTES, 0);
	free(lots);
	expect_code(wait_reply(f, stdin_send(f, sb, ex, "x", 1, 0)), "conflict");
	r = call(f, json_pack("{s:s, s:s, s:s, s:i}", "op", "signal", "id", sb, "exec", ex,
	                      "signal", SIGTERM));
	expect_ok(r);
	json_decref(r);
	expect_code(wait_reply(f, pending), "conflict");
	e = wait_event(f, "exec_ended", sb, ex);
	assert_int_equal(json_integer_value(json_object_get(e, "exit_code")), 128 + SIGTERM);
	json_decref(e);

	/* A terminal: its path, size, TERM, resize, an exit code. */
	new_id("ex-", ex);
	exec_with(f, sb, ex, "[\"sh\"]", "{\"pty\":true,\"pty_size\":{\"rows\":30,\"cols\":100}}");
	const char *script = "tty; stty size; echo term=$TERM; [ -t 0 ] && echo is-a-tty\n";
	stdin_write(f, sb, ex, script, strlen(script), 0);
	stdout_wait_for(f, sb, ex, "\n/dev/pts/");
	stdout_wait_for(f, sb, ex, "\n30 100");
	stdout_wait_for(f, sb, ex, "term=xterm-256color");
	stdout_wait_for(f, sb, ex, "\nis-a-tty");
	r = fcall(f, "{s:s, s:s, s:s, s:i, s:i}", "op", "resize", "id", sb, "exec", ex, "rows", 40,
	          "cols", 120);
	expect_ok(r);
	json_decref(r);
	expect_code(fcall(f, "{s:s, s:s, s:s, s:i, s:i}", "op", "resize", "id", sb, "exec", ex,
	                  "rows", 0, "cols", 120),
	            "invalid_argument");
	stdin_write(f, sb, ex, "stty size\n", 10, 0);
	stdout_wait_for(f, sb, ex, "\n40 120");
	stdin_write(f, sb, ex, "exit 7\n", 7, 0);
	e = wait_event(f, "exec_ended", sb, ex);
	assert_int_equal(json_integer_value(json_object_get(e, "exit_code")), 7);
	json_decref(e);
	/* ^D ends a terminal's input. */
	new_id("ex-", ex);
	exec_with(f, sb, ex, "[\"sh\",\"-c\",\"cat; echo after-eof\"]", "{\"pty\":true}");
	stdin_write(f, sb, ex, "", 0, 1);
	e = wait_event(f, "exec_ended", sb, ex);
	assert_int_equal(json_integer_value(json_object_get(e, "exit_code")), 0);
	json_decref(e);
	stdout_wait_for(f, sb, ex, "after-eof");
	holders_expect(f, 0); /* of the exec that read to EOF and sleeps too: stdin closed */

	/* A restart: stdin and terminal sessions go on; an exec that ended meanwhile is told. */
	char cat[ID_MAX_BYTES], term[ID_MAX_BYTES], brief[ID_MAX_BYTES];
	new_id("ex-", cat);
	exec_with(f, sb, cat, "[\"cat\"]", "{\"stdin\":true}");
	stdin_write(f, sb, cat, "a", 1, 0);
	new_id("ex-", term);
	exec_with(f, sb, term, "[\"sh\"]", "{\"pty\":true}");
	stdin_write(f, sb, term, "echo one\n", 9, 0);
	stdout_wait_for(f, sb, term, "\none");
	new_id("ex-", brief);
	exec_with(f, sb, brief, "[\"sh\",\"-c\",\"sleep 0.3; exit 6\"]", "{}");
	holders_expect(f, 2);
	spawner_down(f);
	usleep(500 * 1000);
	holders_expect(f, 2);
	spawner_up(f, 1);
	r = call(f, json_pack("{s:s}", "op", "hello"));
	expect_ok(r);
	json_decref(r);
	/* Asked after, the running ones are not reported (they end later), nor is the one that
	 * ended meanwhile twice. */
	r = call(
	    f, json_pack("{s:s, s:s, s:[s, s]}", "op", "exec_check", "id", sb, "execs", cat, term));
	expect_ok(r);
	json_decref(r);
	e = wait_event(f, "exec_ended", sb, brief);
	assert_int_equal(json_integer_value(json_object_get(e, "exit_code")), 6);
	json_decref(e);
	stdin_write(f, sb, cat, "b", 1, 1);
	e = wait_event(f, "exec_ended", sb, cat);
	assert_int_equal(json_integer_value(json_object_get(e, "exit_code")), 0);
	json_decref(e);
	unsigned char out[16];
	assert_int_equal(stdout_all(f, sb, cat, out, sizeof(out)), 2);
	assert_memory_equal(out, "ab", 2);
	r = fcall(f, "{s:s, s:s, s:s, s:i, s:i}", "op", "resize", "id", sb, "exec", term, "rows",
	          12, "cols", 34);
	expect_ok(r);
	json_decref(r);
	stdin_write(f, sb, term, "stty size; echo two; exit 3\n", 28, 0);
	e = wait_event(f, "exec_ended", sb, term);
	assert_int_equal(json_integer_value(json_object_get(e, "exit_code")), 3);
	json_decref(e);
	stdout_wait_for(f, sb, term, "\n12 34");
	stdout_wait_for(f, sb, term, "\ntwo");
	holders_expect(f, 0);

	/* Remove: a holder goes with its sandbox. */
	new_id("ex-", cat);
	exec_with(f, sb, cat, "[\"cat\"]", "{\"stdin\":true}");
	holders_expect(f, 1);
	remove_sandbox(f, sb);
	holders_expect(f, 0);
	spawner_down(f);
}

/* The inode of the network namespace a socket was made in. */
static ino_t socket_netns(int fd)
{
	int ns = ioctl(fd, SIOCGSKNS);
	assert_true(ns >= 0);
	struct stat st;
	assert_int_equal(fstat(ns, &st), 0);
	close(ns);
	return st.st_ino;
}

static void test_tunnel_socket(void **state)
{
	struct fixture *f = *state;
	spawner_up(f, 0);
	json_decref(call(f, json_pack("{s:s}", "op", "hello")));
	char id[ID_MAX_BYTES], missing[ID_MAX_BYTES];
	new_id("sb-", id);
	new_id("sb-", missing);
	json_t *r = call(f, json_pack("{s:s, s:s}", "op", "tunnel_socket", "id", missing));
	assert_string_equal(error_code(r), "not_found");
	assert_int_equal(f->passed[0], -1);
	json_decref(r);
	r = create(f, id, "{\"command\":[\"busybox\",\"httpd\",\"-f\",\"-p\",\"8080\"]}");
	expect_ok(r);
	json_decref(r);

	/* A TCP socket of the sandbox's network: it reaches the httpd on the sandbox's
	 * loopback. */
	int connected = 0;
	for (int i = 0; i < 100 && !connected; i++) {
		r = call(f, json_pack("{s:s, s:s}", "op", "tunnel_socket", "id", id));
		expect_ok(r);
		assert_true(json_is_true(json_object_get(r, "fd")));
		json_decref(r);
		int fd = TAKE_FD(f->passed[0]);
		assert_true(fd >= 0);
		struct stat self;
		assert_int_equal(stat("/proc/self/ns/net", &self), 0);
		assert_true(socket_netns(fd) != self.st_ino);
		int type = 0;
		socklen_t len = sizeof(type);
		assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len), 0);
		assert_int_equal(type, SOCK_STREAM);
		struct sockaddr_in lo = {.sin_family = AF_INET, .sin_port = htons(8080)};
		lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		connected = connect(fd, (struct sockaddr *)&lo, sizeof(lo)) == 0;
		close(fd);
		if (!connected)
			usleep(20 * 1000); /* httpd is not listening yet */
	}
	assert_true(connected);

	r = call(f, json_pack("{s:s, s:s, s:i}", "op", "terminate", "id", id, "grace_ms", 0));
	expect_ok(r);
	json_decref(r);
	r = call(f, json_pack("{s:s, s:s}", "op", "tunnel_socket", "id", id));
	assert_string_equal(error_code(r), "conflict");
	assert_int_equal(f->passed[0], -1);
	json_decref(r);
	remove_sandbox(f, id);
	spawner_down(f);
}

/* ---- images ---- */

#define IMAGE_FILE_TEXT  "hello from the image\n"
#define IMAGE_FILE_MTIME 1234567890

/* A small image: the default root's busybox (a hard link: its metadata as it is), and a file
 * with an owner, mode and mtime of its own. */
static void image_dir_make(struct fixture *f, const char *dir)
{
	char root[4096], p[4096 + 64];
	struct sk_error err = {0};
	assert_int_equal(image_busybox_ensure(f->data, f->cfg.busybox, root, sizeof(root), &err),
	                 0);
	assert_int_equal(mkdir(dir, 0755), 0);
	static const char *const DIRS[] = {"bin", "dev", "proc", "sys", "tmp", "data"};
	for (size_t i = 0; i < ARRAY_SIZE(DIRS); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, DIRS[i]);
		assert_int_equal(mkdir(p, 0755), 0);
	}
	snprintf(p, sizeof(p), "%s/tmp", dir);
	assert_int_equal(chmod(p, 01777), 0);
	char bb[4096 + 16];
	snprintf(bb, sizeof(bb), "%s/bin/busybox", root);
	snprintf(p, sizeof(p), "%s/bin/busybox", dir);
	assert_int_equal(link(bb, p), 0);
	static const char *const APPLETS[] = {"sh",    "cat",   "stat",  "rm",
	                                      "mkdir", "chown", "sleep", "truncate"};
	for (size_t i = 0; i < ARRAY_SIZE(APPLETS); i++) {
		snprintf(p, sizeof(p), "%s/bin/%s", dir, APPLETS[i]);
		assert_int_equal(symlink("busybox", p), 0);
	}
	snprintf(p, sizeof(p), "%s/data/hello", dir);
	int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, IMAGE_FILE_TEXT, strlen(IMAGE_FILE_TEXT)),
	                 (ssize_t)strlen(IMAGE_FILE_TEXT));
	close(fd);
	assert_int_equal(chown(p, 1000, 1000), 0);
	assert_int_equal(chmod(p, 0640), 0);
	struct timespec ts[2] = {{IMAGE_FILE_MTIME, 0}, {IMAGE_FILE_MTIME, 0}};
	assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
}

/* Whether the spawner's writable layers are on the data directory's btrfs. */
static int disk_is_btrfs(struct fixture *f)
{
	char disk[sizeof(f->data) + 8];
	struct statfs fs;
	snprintf(disk, sizeof(disk), "%s/disk", f->data);
	return statfs(disk, &fs) == 0 && fs.f_type == BTRFS_SUPER_MAGIC;
}

/* The data directory's store, where the spawner has it (on the disk, held: the spawner unmounts
 * it when it stops); store_close lets it go. */
static void store_open(struct fixture *f, struct img_store *st)
{
	char root[4096], note[1024];
	struct sk_error err = {0};
	assert_int_equal(rt_image_store_place(f->data, 1, root, sizeof(root), &f->store_lock, note,
	                                      sizeof(note), &err),
	                 0);
	assert_int_equal(img_store_open(st, root, &err), 0);
}

static void store_close(struct fixture *f, struct img_store *st)
{
	img_store_close(st);
	rt_image_store_release(f->data, f->store_lock);
	f->store_lock = -1;
}

/* Ingest the test image into the data directory's store: its manifest's digest. */
static void image_make(struct fixture *f, char *digest)
{
	char dir[sizeof(f->data) + 16];
	snprintf(dir, sizeof(dir), "%s/imgsrc", f->data);
	fs_rm_rf_at(AT_FDCWD, dir);
	image_dir_make(f, dir);
	struct img_store st;
	store_open(f, &st);
	struct img_manifest m;
	img_manifest_init(&m);
	struct sk_error err = {0};
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(img_ingest_dir(&st, fd, 0, &img_default_limits, &m, &err), 0);
	assert_int_equal(img_manifest_save(&st, &m, digest, &err), 0);
	close(fd);
	img_manifest_free(&m);
	store_close(f, &st);
	fs_rm_rf_at(AT_FDCWD, dir);
}

/* How many holds the image's tree has. */
static int holds_count(struct fixture *f, const char *digest)
{
	char path[sizeof(f->data) + 128];
	snprintf(path, sizeof(path), "%s/images/trees/%s.holds", f->data, digest);
	DIR *d = opendir(path);
	int n = 0;
	struct dirent *de;
	while (d && (de = readdir(d)))
		n += de->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

/* The stored layer's entry for path (the manifest loaded into m). */
static const struct img_entry *layer_entry(struct fixture *f, const char *layer,
                                           struct img_manifest *m, const char *path)
{
	if (!m->n) {
		struct img_store st;
		struct sk_error err = {0};
		store_open(f, &st);
		assert_int_equal(img_manifest_load(&st, layer, &img_default_limits, m, &err), 0);
		store_close(f, &st);
	}
	const struct img_entry *e = img_manifest_find(m, path);
	if (!e)
		fail_msg("the layer %s holds no %s", layer, path);
	return e;
}

static json_t *create_on(struct fixture *f, const char *id, const char *digest, const char *more)
{
	char spec[512];
	snprintf(spec, sizeof(spec), "{\"image_digest\":\"%s\"%s}", digest, more);
	return create(f, id, spec);
}

/* A worker with a server to fetch from (split mode) that cannot reach it: the create fails
 * with the image, what it fetched and why, and holds nothing. */
static void test_images_fetch_fails(void **state)
{
	struct fixture *f = *state;
	f->cfg.server_url = "http://127.0.0.1:9"; /* discard: nothing listens on loopback */
	f->cfg.server_secret = "secret";
	spawner_up(f, 0);
	/* The spawner has its copy; the tests after this one (one fixture for all) have none. */
	const char *url = f->cfg.server_url;
	f->cfg.server_url = f->cfg.server_secret = NULL;
	const char *missing = "00000000000000000000000000000000000000000000000000000000000000ee";
	char id[ID_MAX_BYTES], want[256];
	new_id("sb-", id);
	json_t *r = create_on(f, id, missing, "");
	assert_non_null(error_code(r));
	const char *msg =
	    json_string_value(json_object_get(json_object_get(r, "error"), "message"));
	snprintf(want, sizeof(want),
	         "image sha256:%s: fetch its manifest: the server %s: ", missing, url);
	if (!msg || !strstr(msg, want))
		fail_msg("message %s lacks %s", msg, want);
	json_decref(r);
	assert_int_equal(holds_count(f, missing), 0);
	char tree[sizeof(f->data) + 128];
	snprintf(tree, sizeof(tree), "%s/images/trees/%s", f->data, missing);
	assert_int_equal(access(tree, F_OK), -1);
}

/* ---- a server that misbehaves, for the fetches of spawner_fetch.c ---- */

enum fake_mode {
	FAKE_ENDLESS_404, /* a 404 whose body never ends */
	FAKE_REDIRECT,    /* a 302 to itself */
};

struct fake_server {
	pid_t pid;
	int port;
	int seen; /* read end: one byte for each request the server got */
};

static void fake_answer(int c, enum fake_mode mode, int port)
{
	char buf[8192];
	if (mode == FAKE_REDIRECT) {
		int n = snprintf(buf, sizeof(buf),
		                 "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%d/elsewhere\r\n"
		                 "Content-Length: 0\r\n\r\n",
		                 port);
		(void)!write(c, buf, (size_t)n);
		return;
	}
	static const char head[] = "HTTP/1.1 404 Not Found\r\nContent-Type: "
	                           "text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
	if (write(c, head, sizeof(head) - 1) < 0)
		return;
	int n = snprintf(buf, sizeof(buf), "%x\r\n", 4096);
	memset(buf + n, 'x', 4096);
	memcpy(buf + n + 4096, "\r\n", 2);
	while (write(c, buf, (size_t)n + 4098) > 0) /* until the client goes */
		;
}

/* A server on 127.0.0.1 that answers every request as mode says; stopped by fake_stop. */
static void fake_start(struct fake_server *fs, enum fake_mode mode)
{
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int p[2];
	assert_true(l >= 0);
	assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(l, 8), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&a, &alen), 0);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	fs->port = ntohs(a.sin_port);
	fs->pid = fork();
	assert_true(fs->pid >= 0);
	if (fs->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* gone with the test, whatever happens to it */
		signal(SIGPIPE, SIG_IGN);
		close(p[0]);
		for (;;) {
			int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
			if (c < 0)
				_exit(1);
			char req[8192];
			size_t len = 0;
			ssize_t n;
			while (len < sizeof(req) - 1 &&
			       (n = read(c, req + len, sizeof(req) - 1 - len)) > 0) {
				len += (size_t)n;
				req[len] = '\0';
				if (strstr(req, "\r\n\r\n"))
					break;
			}
			(void)!write(p[1], "r", 1);
			fake_answer(c, mode, fs->port);
			close(c);
		}
	}
	close(l);
	close(p[1]);
	fs->seen = p[0];
	fcntl(fs->seen, F_SETFL, O_NONBLOCK);
}

/* Stop it; how many requests it got. */
static int fake_stop(struct fake_server *fs)
{
	kill(fs->pid, SIGKILL);
	waitpid(fs->pid, NULL, 0);
	char buf[64];
	ssize_t n = read(fs->seen, buf, sizeof(buf));
	close(fs->seen);
	return n > 0 ? (int)n : 0;
}

/* sp_image_fetch_manifest of digest into a store of its own, in a child (as in a job: a fork
 * that inits libcurl), given up after timeout_s; its error message into msg. Its result, or
 * -ETIME when it took longer. */
static int fetch_in_child(const struct spawner_config *cfg, const char *digest, int timeout_s,
                          char *msg, size_t size)
{
	char root[] = "/tmp/skiff-test-fetch-XXXXXX";
	int p[2];
	assert_non_null(mkdtemp(root));
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(p[0]);
		struct img_store st;
		struct sk_error err = {0};
		int r = img_store_open(&st, root, &err);
		if (r == 0)
			r = sp_image_fetch_manifest(cfg, &st, digest, &err);
		(void)!write(p[1], err.msg, strlen(err.msg));
		_exit(-r);
	}
	close(p[1]);
	int status = 0, r = -ETIME;
	for (int i = 0; i < timeout_s * 20; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			r = WIFEXITED(status) ? -WEXITSTATUS(status) : -EINTR;
			break;
		}
		usleep(50000);
	}
	if (r == -ETIME) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	ssize_t n = read(p[0], msg, size - 1);
	msg[n > 0 ? n : 0] = '\0';
	close(p[0]);
	int dfd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	fs_rm_rf_at(dfd, root + strlen("/tmp/"));
	close(dfd);
	return r;
}

static const char FETCH_DIGEST[] =
    "00000000000000000000000000000000000000000000000000000000000000ef";

/* A fetch from a fake server answering as mode says, given up after timeout_s: its result
 * (-ETIME: still running), its message, and how many requests the server got. */
static int fetch_from_fake(enum fake_mode mode, int timeout_s, char *msg, size_t size,
                           int *requests)
{
	struct fake_server fs;
	fake_start(&fs, mode);
	char url[64];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", fs.port);
	struct spawner_config cfg = {.server_url = url, .server_secret = "secret"};
	int r = fetch_in_child(&cfg, FETCH_DIGEST, timeout_s, msg, size);
	*requests = fake_stop(&fs);
	return r;
}

/* An error answer whose body never ends: the start is kept for the message and the transfer
 * cut, rather than read (and thrown away) for as long as the server sends. */
static void test_fetch_endless_error_body(void **state)
{
	(void)state;
	char msg[1024];
	int requests = 0, r = fetch_from_fake(FAKE_ENDLESS_404, 10, msg, sizeof(msg), &requests);
	if (r == -ETIME)
		fail_msg("the fetch still ran after 10 s (it reads the error's body to its end)");
	assert_int_equal(r, -EIO);
	if (!strstr(msg, "fetch its manifest: the server answered 404: xxxx"))
		fail_msg("message: %s", msg);
}

/* A redirect is not followed (the worker secret goes to the server only): the 302 is the
 * error, and the server got one request. */
static void test_fetch_no_redirect(void **state)
{
	(void)state;
	char msg[1024];
	int requests = 0, r = fetch_from_fake(FAKE_REDIRECT, 20, msg, sizeof(msg), &requests);
	assert_int_equal(r, -EIO);
	if (!strstr(msg, "the server answered 302"))
		fail_msg("message: %s", msg);
	assert_int_equal(requests, 1);
}

/* A proxy named by the environment is not used: it would get the worker secret. The server's
 * URL is a port nothing listens on, so the fetch fails to connect; the proxy sees nothing. */
static void test_fetch_ignores_proxy_environment(void **state)
{
	(void)state;
	struct fake_server proxy;
	fake_start(&proxy, FAKE_ENDLESS_404);
	char env[64], msg[1024];
	snprintf(env, sizeof(env), "http://127.0.0.1:%d", proxy.port);
	setenv("http_proxy", env, 1);
	setenv("ALL_PROXY", env, 1);
	struct spawner_config cfg = {.server_url = "http://127.0.0.1:9", /* discard: none */
	                             .server_secret = "secret"};
	int r = fetch_in_child(&cfg, FETCH_DIGEST, 20, msg, sizeof(msg));
	unsetenv("http_proxy");
	unsetenv("ALL_PROXY");
	int requests = fake_stop(&proxy);
	assert_int_equal(requests, 0);
	assert_int_equal(r, -EIO);
	if (!strstr(msg, "the server http://127.0.0.1:9: "))
		fail_msg("message: %s", msg);
}

static void test_images(void **state)
{
	struct fixture *f = *state;
	spawner_up(f, 1);
	char digest[IMG_DIGEST_HEX], a[ID_MAX_BYTES], b[ID_MAX_BYTES];
	const char *missing = "00000000000000000000000000000000000000000000000000000000000000ff";
	new_id("sb-", a);
	json_t *r = create_on(f, a, missing, "");
	assert_string_equal(error_code(r), "not_found");
	char want[256];
	snprintf(want, sizeof(want), "image sha256:%s is not in this worker's store", missing);
	assert_non_null(strstr(
	    json_string_value(json_object_get(json_object_get(r, "error"), "message")), want));
	json_decref(r);
	assert_int_equal(holds_count(f, missing), 0);

	image_make(f, digest);
	/* Two at once: one tree made, both start on it; a sandbox on an image is never pooled. */
	new_id("sb-", b);
	int ra = send_req(f, json_pack("{s:s, s:s, s:{s:s, s:[sss]}}", "op", "create", "id", a,
	                               "spec", "image_digest", digest, "command", "/bin/sh", "-c",
	                               "stat -c '%u %g %a %Y' /data/hello /bin/busybox; "
	                               "cat /data/hello"));
	int rb = send_req(f, json_pack("{s:s, s:s, s:{s:s}}", "op", "create", "id", b, "spec",
	                               "image_digest", digest));
	r = wait_reply(f, ra);
	expect_ok(r);
	assert_false(json_is_true(json_object_get(r, "pooled")));
	json_decref(r);
	r = wait_reply(f, rb);
	expect_ok(r);
	json_decref(r);
	assert_int_equal(holds_count(f, digest), 2);
	expect_end(wait_event(f, "sandbox_ended", a, NULL), "exited", 0);
	char out[1024];
	json_decref(output(f, a, NULL, "stdout", 0, out, sizeof(out)));
	char expect[256];
	/* Owners as the image says, inside (idmapped), and nothing chowned on the host. */
	snprintf(expect, sizeof(expect), "1000 1000 640 %d\n0 0 755 %s", IMAGE_FILE_MTIME, "");
	assert_true(strncmp(out, expect, strlen(expect)) == 0);
	assert_non_null(strstr(out, IMAGE_FILE_TEXT));
	char tree[sizeof(f->data) + 128];
	struct stat st;
	snprintf(tree, sizeof(tree), "%s/images/trees/%s/data/hello", f->data, digest);
	assert_int_equal(stat(tree, &st), 0);
	assert_true(st.st_uid == 1000 && st.st_gid == 1000 && (st.st_mode & 07777) == 0640);

	/* A file op sees the image too. */
	r = call(f, json_pack("{s:s, s:s, s:s}", "op", "fs_stat", "id", b, "path", "/data/hello"));
	expect_ok(r);
	json_decref(r);
	remove_sandbox(f, a);
	assert_int_equal(holds_count(f, digest), 1);
	remove_sandbox(f, b);
	json_decref(wait_event(f, "sandbox_ended", b, NULL));
	assert_int_equal(holds_count(f, digest), 0);

	/* A hold left by a sandbox that is gone (removed while no spawner ran) goes at hello. */
	struct img_store s;
	struct sk_error err = {0};
	char holder[64];
	store_open(f, &s);
	snprintf(holder, sizeof(holder), "%s_sb-00000000000000000000000000", f->instance);
	assert_int_equal(img_tree_hold(&s, digest, holder, &err), 0);
	store_close(f, &s);
	assert_int_equal(holds_count(f, digest), 1);
	spawner_up(f, 0);
	r = call(f, json_pack("{s:s}", "op", "hello"));
	expect_ok(r);
	json_decref(r);
	assert_int_equal(holds_count(f, digest), 0);

	/* A terminate and a remove that come while the tree is made drop the creates: nothing
	 * starts, nothing stays held, the creates are answered. */
	snprintf(tree, sizeof(tree), "%s/images/trees/%s", f->data, digest);
	assert_int_equal(fs_rm_rf_at(AT_FDCWD, tree), 0);
	new_id("sb-", a);
	new_id("sb-", b);
	ra = send_req(f, json_pack("{s:s, s:s, s:{s:s}}", "op", "create", "id", a, "spec",
	                           "image_digest", digest));
	rb = send_req(f, json_pack("{s:s, s:s, s:{s:s}}", "op", "create", "id", b, "spec",
	                           "image_digest", digest));
	int rt =
	    send_req(f, json_pack("{s:s, s:s, s:i}", "op", "terminate", "id", a, "grace_ms", 0));
	int rr = send_req(f, json_pack("{s:s, s:s}", "op", "remove", "id", b));
	r = wait_reply(f, rt);
	expect_ok(r);
	assert_string_equal(json_string_value(json_object_get(r, "state")), "terminated");
	json_decref(r);
	r = wait_reply(f, rr);
	expect_ok(r);
	json_decref(r);
	r = wait_reply(f, ra);
	assert_string_equal(error_code(r), "conflict");
	assert_non_null(
	    strstr(json_string_value(json_object_get(json_object_get(r, "error"), "message")),
	           "was terminated while its image was prepared"));
	json_decref(r);
	r = wait_reply(f, rb);
	assert_string_equal(error_code(r), "conflict");
	json_decref(r);
	assert_int_equal(holds_count(f, digest), 0);
	r = call(f, json_pack("{s:s, s:s}", "op", "usage", "id", a));
	assert_string_equal(error_code(r), "not_found");
	json_decref(r);
	r = call(f, json_pack("{s:s, s:s}", "op", "usage", "id", b));
	assert_string_equal(error_code(r), "not_found");
	json_decref(r);
	spawner_down(f);
}

/* Signal the processes of sandbox id from outside the spawner. */
static void signal_sandbox(struct fixture *f, const char *id, int sig)
{
	struct rt rt;
	struct sk_error err = {0};
	assert_int_equal(rt_init(&rt, f->instance, NULL, &err), 0);
	struct rt_sandbox_info *all = NULL;
	int n = rt_sandbox_list(&rt, &all, &err);
	struct rt_sandbox *sb = NULL;
	for (int i = 0; i < n && !sb; i++)
		if (!strcmp(all[i].label, id))
			assert_int_equal(rt_sandbox_attach(&rt, all[i].id, &sb, &err), 0);
	free(all);
	assert_non_null(sb);
	assert_true(rt_sandbox_signal_all(sb, sig) > 0);
	rt_sandbox_close(sb);
	rt_release(&rt);
}

/* A build step found again by a restarted spawner: its layer is stored when it ends, from its
 * btrfs subvolume; a tmpfs layer is out of the new spawner's reach (layer_error). */
static void capture_after_restart(struct fixture *f, const char *digest, int btrfs)
{
	char id[ID_MAX_BYTES];
	new_id("sb-", id);
	json_t *r = call(f, json_pack("{s:s, s:s, s:{s:s, s:b, s:[sss]}}", "op", "create", "id", id,
	                              "spec", "image_digest", digest, "capture_layer", 1, "command",
	                              "/bin/sh", "-c",
	                              "trap 'echo x > /after; exit 0' TERM; "
	                              "while :; do sleep 0.05; done"));
	expect_ok(r);
	json_decref(r);
	spawner_up(f, 0); /* the first one stops; the sandbox runs on */
	r = call(f, json_pack("{s:s}", "op", "hello"));
	expect_ok(r);
	json_decref(r);
	signal_sandbox(f, id, SIGTERM);
	json_t *e = wait_event(f, "sandbox_ended", id, NULL);
	expect_end(json_incref(e), "exited", 0);
	const char *layer = json_string_value(json_object_get(e, "layer"));
	if (btrfs) {
		assert_non_null(layer);
		struct img_manifest m;
		img_manifest_init(&m);
		assert_int_equal(layer_entry(f, layer, &m, "/after")->type, IMG_REG);
		img_manifest_free(&m);
	} else {
		assert_null(layer);
		assert_non_null(json_string_value(json_object_get(e, "layer_error")));
	}
	json_decref(e);
	remove_sandbox(f, id);
}

/* What a build step's command changed comes back as a layer, on either writable layer. */
static void test_capture_layer(void **state)
{
	struct fixture *f = *state;
	static const char *const BACKENDS[] = {"auto", "tmpfs"};
	char digest[IMG_DIGEST_HEX], id[ID_MAX_BYTES];
	for (size_t i = 0; i < ARRAY_SIZE(BACKENDS); i++) {
		setenv("SKIFF_DISK_BACKEND", BACKENDS[i], 1);
		spawner_up(f, 0);
		unsetenv("SKIFF_DISK_BACKEND");
		if (i == 0)
			image_make(f, digest);
		new_id("sb-", id);
		json_t *r = call(
		    f, json_pack("{s:s, s:s, s:{s:s, s:b, s:[sss]}}", "op", "create", "id", id,
		                 "spec", "image_digest", digest, "capture_layer", 1, "command",
		                 "/bin/sh", "-c",
		                 "echo new > /data/new && chown 7:8 /data/new && rm /data/hello && "
		                 "mkdir -p /made/deep"));
		expect_ok(r);
		json_decref(r);
		json_t *e = wait_event(f, "sandbox_ended", id, NULL);
		const char *layer = json_string_value(json_object_get(e, "layer"));
		if (!layer)
			fail_msg("%s: no layer: %s", BACKENDS[i],
			         json_string_value(json_object_get(e, "layer_error")));
		assert_int_equal(strlen(layer), IMG_DIGEST_HEX - 1);
		struct img_manifest m;
		img_manifest_init(&m);
		const struct img_entry *n = layer_entry(f, layer, &m, "/data/new");
		assert_int_equal(n->type, IMG_REG);
		assert_true(n->uid == 7 && n->gid == 8 && n->size == 4);
		assert_int_equal(layer_entry(f, layer, &m, "/data/hello")->type, IMG_WHITEOUT);
		const struct img_entry *d = layer_entry(f, layer, &m, "/made/deep");
		assert_true(d->type == IMG_DIR && d->uid == 0);
		img_manifest_free(&m);
		json_decref(e);
		remove_sandbox(f, id);
		assert_int_equal(holds_count(f, digest), 0);

		/* A sparse file takes no space but reads as its size: a layer holds no more than
		 * the sandbox's disk could. */
		new_id("sb-", id);
		r = call(f, json_pack("{s:s, s:s, s:{s:s, s:b, s:i, s:[sss]}}", "op", "create",
		                      "id", id, "spec", "image_digest", digest, "capture_layer", 1,
		                      "disk_mib", 16, "command", "/bin/sh", "-c",
		                      "truncate -s 200M /sparse"));
		expect_ok(r);
		json_decref(r);
		e = wait_event(f, "sandbox_ended", id, NULL);
		expect_end(json_incref(e), "exited", 0);
		assert_null(json_object_get(e, "layer"));
		const char *why = json_string_value(json_object_get(e, "layer_error"));
		if (!why || !strstr(why, "/sparse"))
			fail_msg("%s: a 200 MiB sparse file in a 16 MiB layer: %s", BACKENDS[i],
			         why ? why : "stored");
		json_decref(e);
		remove_sandbox(f, id);

		/* A name that is not UTF-8 can't be in a layer: the error says so, and names it
		 * (lossily: the message is JSON). */
		new_id("sb-", id);
		r = call(f, json_pack("{s:s, s:s, s:{s:s, s:b, s:[sss]}}", "op", "create", "id", id,
		                      "spec", "image_digest", digest, "capture_layer", 1, "command",
		                      "/bin/sh", "-c", "echo x > \"/bad$(printf '\\377')\""));
		expect_ok(r);
		json_decref(r);
		e = wait_event(f, "sandbox_ended", id, NULL);
		expect_end(json_incref(e), "exited", 0);
		why = json_string_value(json_object_get(e, "layer_error"));
		if (!why || !strstr(why, "\"/bad\xEF\xBF\xBD\": name not valid UTF-8"))
			fail_msg("%s: a name that is not UTF-8: %s", BACKENDS[i],
			         why ? why : "stored");
		json_decref(e);
		remove_sandbox(f, id);
		capture_after_restart(f, digest, i == 0 && disk_is_btrfs(f));
		spawner_down(f);
	}
}

/* A running sandbox's layer, as it is now. */
static void test_snapshot(void **state)
{
	struct fixture *f = *state;
	spawner_up(f, 0);
	char digest[IMG_DIGEST_HEX], id[ID_MAX_BYTES], ex[ID_MAX_BYTES];
	image_make(f, digest);
	new_id("sb-", id);
	json_t *r = create_on(f, id, digest, "");
	expect_ok(r);
	json_decref(r);
	new_id("ex-", ex);
	r = exec_cmd(f, id, ex, "[\"/bin/sh\", \"-c\", \"echo snap > /snap\"]");
	expect_ok(r);
	json_decref(r);
	json_decref(wait_event(f, "exec_ended", id, ex));
	r = call(f, json_pack("{s:s, s:s}", "op", "snapshot", "id", id));
	expect_ok(r);
	const char *layer = json_string_value(json_object_get(r, "layer"));
	assert_non_null(layer);
	struct img_manifest m;
	img_manifest_init(&m);
	const struct img_entry *e = layer_entry(f, layer, &m, "/snap");
	assert_true(e->type == IMG_REG && e->size == 5);
	img_manifest_free(&m);
	json_decref(r);
	r = call(f, json_pack("{s:s, s:s, s:i}", "op", "terminate", "id", id, "grace_ms", 0));
	expect_ok(r);
	json_decref(r);
	r = call(f, json_pack("{s:s, s:s}", "op", "snapshot", "id", id));
	assert_string_equal(error_code(r), "conflict");
	json_decref(r);
	remove_sandbox(f, id);
	r = call(f, json_pack("{s:s, s:s}", "op", "snapshot", "id", id));
	assert_string_equal(error_code(r), "not_found");
	json_decref(r);
	spawner_down(f);
}

/* A fresh spawner without a pool, sent a create of a new sandbox (its id in id) whose answer is
 * not waited for: the sandbox is made on the spot, so its create is on its way a while. */
static int create_sent(struct fixture *f, char *id)
{
	spawner_up(f, 0);
	json_decref(call(f, json_pack("{s:s}", "op", "hello")));
	new_id("sb-", id);
	return send_req(f, json_pack("{s:s, s:s, s:{s:[s,s]}}", "op", "create", "id", id, "spec",
	                             "command", "sleep", "100"));
}

/* Requests about a create on its way wait for its answer, as when the create held the loop: a
 * hello (a worker registering again) lists the sandbox, and a flood of requests for its id is
 * bounded: past SP_CREATE_MAX_HELD they are refused at once. */
static void test_create_on_its_way(void **state)
{
	struct fixture *f = *state;
	char id[ID_MAX_BYTES];
	int creq = create_sent(f, id);
	int hreq = send_req(f, json_pack("{s:s}", "op", "hello"));
	int n = SP_CREATE_MAX_HELD + 8, first = 0;
	for (int i = 0; i < n; i++) {
		int q = send_req(f, json_pack("{s:s, s:s}", "op", "usage", "id", id));
		first = first ? first : q;
	}
	json_t *r = wait_reply(f, creq);
	expect_ok(r);
	json_decref(r);
	r = wait_reply(f, hreq);
	expect_ok(r);
	json_t *list = json_object_get(r, "sandboxes");
	int listed = 0;
	size_t i;
	json_t *v;
	json_array_foreach (list, i, v)
		listed += !strcmp(json_string_value(json_object_get(v, "id")), id);
	assert_int_equal(listed, 1);
	json_decref(r);
	int ok = 0, refused = 0;
	for (int q = first; q < first + n; q++) {
		r = wait_reply(f, q);
		if (is_ok(r))
			ok++;
		else if (!strcmp(error_code(r), "resource_exhausted"))
			refused++;
		json_decref(r);
	}
	assert_true(refused > 0 && ok > 0 && ok + refused == n && ok < SP_CREATE_MAX_HELD);
	remove_sandbox(f, id);
	spawner_down(f);
}

/* A terminate sent while its sandbox's create is on its way runs after the create's answer: the
 * create succeeds, then the sandbox ends as terminated, in that order on the socket. */
static void test_create_then_terminate(void **state)
{
	struct fixture *f = *state;
	char id[ID_MAX_BYTES];
	int creq = create_sent(f, id);
	int treq =
	    send_req(f, json_pack("{s:s, s:s, s:i}", "op", "terminate", "id", id, "grace_ms", 0));
	/* In arrival order: 1 the create's answer, 2 the terminate's, 3 sandbox_ended. */
	int seen_create = 0, seen_term = 0, seen_end = 0, n = 0;
	while (!seen_create || !seen_term || !seen_end) {
		json_t *m = recv_msg(f);
		json_int_t req = json_integer_value(json_object_get(m, "req"));
		const char *ev = json_string_value(json_object_get(m, "event"));
		const char *eid = json_string_value(json_object_get(m, "id"));
		n++;
		if (req == creq && json_object_get(m, "ok")) {
			expect_ok(m);
			seen_create = n;
		} else if (req == treq && json_object_get(m, "ok")) {
			expect_ok(m);
			seen_term = n;
		} else if (ev && !strcmp(ev, "sandbox_ended") && eid && !strcmp(eid, id)) {
			assert_string_equal(json_string_value(json_object_get(m, "state")),
			                    "terminated");
			seen_end = n;
		}
		json_decref(m);
	}
	assert_true(seen_create < seen_term && seen_create < seen_end);
	remove_sandbox(f, id);
	spawner_down(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bad_requests),
	    cmocka_unit_test(test_pool_exec_output),
	    cmocka_unit_test(test_ends),
	    cmocka_unit_test(test_restart),
	    cmocka_unit_test(test_files),
	    cmocka_unit_test(test_files_async),
	    cmocka_unit_test(test_stdin),
	    cmocka_unit_test(test_tunnel_socket),
	    cmocka_unit_test(test_images),
	    cmocka_unit_test(test_images_fetch_fails),
	    cmocka_unit_test(test_fetch_endless_error_body),
	    cmocka_unit_test(test_fetch_no_redirect),
	    cmocka_unit_test(test_fetch_ignores_proxy_environment),
	    cmocka_unit_test(test_capture_layer),
	    cmocka_unit_test(test_snapshot),
	    cmocka_unit_test(test_create_on_its_way),
	    cmocka_unit_test(test_create_then_terminate),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
