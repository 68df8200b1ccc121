/* The spawner process: fork and reap it, frame its messages, and its loop. One poll() over the
 * worker's socket, every running sandbox's init pidfd and OOM fd, every running exec's pidfd,
 * stdin holder's pidfd and stdin waiting for room, and every file op helper's pipe and pidfd,
 * with timers for deadlines, grace periods and output
 * trimming; when nothing else is pending it makes one pooled sandbox at a time. Requests are
 * handled in order; most are answered at once, terminate and the file ops later. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../image/busybox.h"
#include "../lib/encoding.h"
#include "../lib/fsutil.h"
#include "../lib/sock.h"
#include "spawner_internal.h"
#include "stdin_holder.h"

#define SP_READ_CHUNK_BYTES (64 * 1024)

int64_t sp_now_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sp_log(const char *level, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	for (char *p = msg; *p; p++)
		if (*p == '"' || *p == '\n')
			*p = *p == '"' ? '\'' : ' ';
	fprintf(stderr, "level=%s msg=\"spawner: %s\"\n", level, msg);
}

/* ---- frames ---- */

int spawner_send(int fd, const char *json, size_t len)
{
	return spawner_send_fd(fd, json, len, -1);
}

int spawner_send_fd(int fd, const char *json, size_t len, int pass_fd)
{
	if (len > SPAWNER_MAX_MSG_BYTES)
		return -EMSGSIZE;
	unsigned char head[4] = {len >> 24, len >> 16, len >> 8, len};
	struct {
		const char *p;
		size_t n;
	} parts[2] = {{(const char *)head, 4}, {json, len}};
	for (int i = 0; i < 2; i++) {
		size_t done = 0;
		while (done < parts[i].n) {
			/* The fd goes with the frame's first byte: the reader takes it when it
			 * reads the frame. */
			ssize_t w =
			    sock_send_part_fd(fd, parts[i].p + done, parts[i].n - done, pass_fd);
			if (w == -ENOTSOCK && pass_fd < 0) { /* a pipe (tests) */
				w = write(fd, parts[i].p + done, parts[i].n - done);
				if (w < 0)
					w = -errno;
			}
			if (w == -EINTR)
				continue;
			if (w == -EAGAIN) {
				struct pollfd p = {.fd = fd, .events = POLLOUT};
				poll(&p, 1, -1);
				continue;
			}
			if (w < 0)
				return (int)w;
			done += (size_t)w;
			pass_fd = -1;
		}
	}
	return 0;
}

ssize_t spawner_frame_parse(const char *buf, size_t len, const char **ret_msg, size_t *ret_len)
{
	if (len < 4)
		return 0;
	const unsigned char *u = (const unsigned char *)buf;
	size_t n = (size_t)u[0] << 24 | (size_t)u[1] << 16 | (size_t)u[2] << 8 | u[3];
	if (n > SPAWNER_MAX_MSG_BYTES)
		return -EMSGSIZE;
	if (len < 4 + n)
		return 0;
	*ret_msg = buf + 4;
	*ret_len = n;
	return (ssize_t)(4 + n);
}

void sp_send(struct spawner *sp, json_t *msg)
{
	sp_send_fd(sp, msg, -1);
}

void sp_send_fd(struct spawner *sp, json_t *msg, int pass_fd)
{
	char *text = json_dumps(msg, JSON_COMPACT);
	int r = text ? spawner_send_fd(sp->fd, text, strlen(text), pass_fd) : -ENOMEM;
	if (r < 0)
		sp_log("error", "send a message: %s", strerror(-r));
	free(text);
}

void sp_event(struct spawner *sp, json_t *event)
{
	json_array_append_new(sp->events, event);
}

json_t *sp_error_json(const struct sk_error *err)
{
	const char *code;
	switch (err->code) {
	case -SK_EINVAL_SPEC:
	case -SK_ECMD_NOTFOUND:
	case -SK_ECMD_EXEC:
	case -EINVAL:
	case -EMSGSIZE:
	case -EBADMSG: code = "invalid_argument"; break;
	case -ENOENT: code = "not_found"; break;
	case -EEXIST:
	case -EBUSY:
	case -ESRCH: code = "conflict"; break;
	case -ENOMEM:
	case -ENOSPC:
	case -EAGAIN:
	case -EMFILE:
	case -ENFILE:
	case -EDQUOT:
	case -EUSERS: code = "resource_exhausted"; break;
	case -ETIME: code = "deadline_exceeded"; break; /* a deadline the API promises */
	default: code = "internal";
	}
	return json_pack("{s:s, s:s}", "code", code, "message", err->msg);
}

int sp_json_string(json_t *req, const char *key, const char **ret, struct sk_error *err)
{
	json_t *v = json_object_get(req, key);
	if (!v || json_is_null(v))
		return -ENOENT;
	if (!json_is_string(v) || json_string_length(v) != strlen(json_string_value(v)))
		return sk_error_set(err, -EINVAL, "%s: expected a string", key);
	*ret = json_string_value(v);
	return 0;
}

int sp_json_int(json_t *req, const char *key, json_int_t min, json_int_t max, json_int_t *ret,
                struct sk_error *err)
{
	json_t *v = json_object_get(req, key);
	if (!v || json_is_null(v))
		return -ENOENT;
	if (!json_is_integer(v))
		return sk_error_set(err, -EINVAL, "%s: expected a whole number", key);
	json_int_t i = json_integer_value(v);
	if (i < min || i > max)
		return sk_error_set(err, -EINVAL, "%s: %lld is out of range [%lld, %lld]", key,
		                    (long long)i, (long long)min, (long long)max);
	*ret = i;
	return 0;
}

static size_t utf8_seq_len(unsigned char c)
{
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		return 2;
	if (c >= 0xE0 && c <= 0xEF)
		return 3;
	if (c >= 0xF0 && c <= 0xF4)
		return 4;
	return 0;
}

/* A JSON string of n bytes of s; a byte that is not part of valid UTF-8 (a file name may hold
 * any) becomes U+FFFD. NULL when out of memory. */
json_t *sp_json_lossy(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	if (utf8_valid(u, n))
		return json_stringn(s, n);
	_cleanup_free_ char *buf = malloc(n * 3 + 1);
	if (!buf)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq_len(u[i]);
		if (k && i + k <= n && utf8_valid(u + i, k)) {
			memcpy(buf + o, s + i, k);
			o += k;
			i += k;
		} else {
			memcpy(buf + o, "\xEF\xBF\xBD", 3);
			o += 3;
			i++;
		}
	}
	return json_stringn(buf, o);
}

_Noreturn void sp_child_answer(int fd, json_t *msg)
{
	char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
	size_t len = text ? strlen(text) : 0;
	for (size_t done = 0; done < len;) {
		ssize_t w = write(fd, text + done, len - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			_exit(1);
		done += (size_t)w;
	}
	_exit(text ? 0 : 1);
}

int sp_child_reap(int *pidfd, int *exit_ok)
{
	siginfo_t si = {0};
	if (waitid((idtype_t)P_PIDFD, (id_t)*pidfd, &si, WEXITED | WNOHANG) < 0) {
		if (errno == EINTR)
			return 0;
		/* Not ours to wait for any more: nothing else to learn from it. */
	} else if (si.si_pid == 0) {
		return 0;
	}
	*exit_ok = si.si_pid != 0 && si.si_code == CLD_EXITED && si.si_status == 0;
	close(*pidfd);
	*pidfd = -1;
	return 1;
}

/* ---- requests ---- */

static const struct {
	const char *name;
	int (*fn)(struct spawner *, json_t *, json_t *, struct sk_error *);
} OPS[] = {
    {"hello", sp_op_hello},
    {"create", sp_op_create},
    {"exec", sp_op_exec},
    {"signal", sp_op_signal},
    {"stdin", sp_op_stdin},
    {"resize", sp_op_resize},
    {"exec_check", sp_op_exec_check},
    {"terminate", sp_op_terminate},
    {"remove", sp_op_remove},
    {"usage", sp_op_usage},
    {"output", sp_op_output},
    {"output_cancel", sp_op_output_cancel},
    {"timeout", sp_op_timeout},
    {"file_read", sp_op_file_read},
    {"file_write", sp_op_file_write},
    {"fs_stat", sp_op_fs_stat},
    {"fs_list", sp_op_fs_list},
    {"fs_mkdir", sp_op_fs_mkdir},
    {"fs_remove", sp_op_fs_remove},
    {"fs_move", sp_op_fs_move},
    {"tunnel_socket", sp_op_tunnel_socket},
    {"snapshot", sp_op_snapshot},
};

static void reply_error(struct spawner *sp, json_t *req_id, const struct sk_error *err)
{
	json_t *m = json_pack("{s:O, s:b, s:o}", "req", req_id ? req_id : json_null(), "ok", 0,
	                      "error", sp_error_json(err));
	sp_send(sp, m);
	json_decref(m);
}

int sp_record_write(const char *dir, const char *name, json_t *rec)
{
	char tmp[700], final[700];
	snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, name);
	snprintf(final, sizeof(final), "%s/%s", dir, name);
	if (json_dump_file(rec, tmp, JSON_COMPACT) < 0)
		return -EIO;
	if (rename(tmp, final) < 0) {
		int r = -errno;
		unlink(tmp);
		return r;
	}
	return 0;
}

void sp_answer(struct spawner *sp, json_t *req_id, json_t *fields, const struct sk_error *err)
{
	json_t *m = fields;
	if (err) {
		json_decref(fields);
		m = json_pack("{s:O, s:b, s:o}", "req", req_id, "ok", 0, "error",
		              sp_error_json(err));
	} else if (m) {
		json_object_set(m, "req", req_id);
		json_object_set_new(m, "ok", json_true());
	}
	if (m)
		sp_event(sp, m);
	else
		sp_log("error", "request %lld: out of memory for the reply",
		       (long long)json_integer_value(req_id));
}

static void events_flush(struct spawner *sp)
{
	size_t i;
	json_t *e;
	json_array_foreach (sp->events, i, e)
		sp_send(sp, e);
	json_array_clear(sp->events);
}

static void dispatch(struct spawner *sp, json_t *req, json_t *req_id, const char *op);

void sp_reply(struct spawner *sp, json_t *req_id, const char *op, int r, json_t *reply,
              struct sk_error *err)
{
	if (r == 0) {
		json_object_set(reply, "req", req_id);
		json_object_set_new(reply, "ok", json_true());
		if (sp->reply_fd >= 0)
			json_object_set_new(reply, "fd", json_true());
		sp_send_fd(sp, reply, sp->reply_fd);
	} else if (r < 0) {
		if (!err->code)
			sk_error_set(err, r, "%s: %s", op, strerror(-r));
		reply_error(sp, req_id, err);
	}
	if (sp->reply_fd >= 0) /* passed with the reply, or not sent: ours no more */
		close(TAKE_FD(sp->reply_fd));
}

static void request_handle(struct spawner *sp, const char *msg, size_t len)
{
	sp->last_request_mono = sp_now_mono();
	struct sk_error err = {0};
	/* NUL is allowed in strings so that a request holding one is answered under its req;
	 * sp_json_string refuses such strings. */
	json_t *req = json_loadb(msg, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
	json_t *req_id = json_object_get(req, "req");
	const char *op = NULL;
	if (!json_is_object(req)) {
		sk_error_set(&err, -EINVAL, "a request is one JSON object");
	} else if (!json_is_integer(req_id)) {
		req_id = NULL;
		sk_error_set(&err, -EINVAL, "req: expected a whole number");
	} else if (sp_json_string(req, "op", &op, &err) < 0) {
		if (!err.code)
			sk_error_set(&err, -EINVAL, "op: missing");
	}
	if (err.code) {
		reply_error(sp, req_id, &err);
		json_decref(req);
		return;
	}
	dispatch(sp, req, req_id, op);
	json_decref(req);
}

void sp_request_replay(struct spawner *sp, json_t *req)
{
	events_flush(sp); /* what came before it goes first */
	dispatch(sp, req, json_object_get(req, "req"),
	         json_string_value(json_object_get(req, "op")));
}

/* One well-formed request: its op runs, and it is answered now or (op's return 1) later. */
static void dispatch(struct spawner *sp, json_t *req, json_t *req_id, const char *op)
{
	struct sk_error err = {0};
	int r = strcmp(op, "create") != 0 ? sp_create_hold(sp, req, op, &err) : 0;
	if (r > 0)
		return;
	json_t *reply = json_object();
	size_t i;
	for (i = 0; i < ARRAY_SIZE(OPS); i++)
		if (!strcmp(OPS[i].name, op))
			break;
	if (r == 0 && i == ARRAY_SIZE(OPS))
		r = sk_error_set(&err, -EINVAL, "unknown op \"%.32s\"", op);
	else if (r == 0)
		r = OPS[i].fn(sp, req, reply, &err);
	sp_reply(sp, req_id, op, r, reply, &err);
	events_flush(sp);
	json_decref(reply);
}

/* The socket's bytes: whole frames are handled; an oversize one is skipped and answered. */
struct inbuf {
	char *buf;
	size_t len, cap;
	size_t skip; /* bytes of an oversize frame still to drop */
};

/* Read what is there; returns 0 at EOF (or a fatal error), 1 otherwise. */
static int input_read(struct spawner *sp, struct inbuf *in)
{
	for (;;) {
		if (in->cap - in->len < SP_READ_CHUNK_BYTES) {
			size_t cap = in->cap ? in->cap * 2 : 2 * SP_READ_CHUNK_BYTES;
			char *nb = realloc(in->buf, cap);
			if (!nb) {
				sp_log("error", "out of memory reading a request");
				return 0;
			}
			in->buf = nb;
			in->cap = cap;
		}
		ssize_t n = read(sp->fd, in->buf + in->len, in->cap - in->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0)
			return 0;
		in->len += (size_t)n;
		if ((size_t)n < SP_READ_CHUNK_BYTES)
			break;
	}
	size_t off = 0;
	for (;;) {
		if (in->skip) {
			size_t k = in->len - off < in->skip ? in->len - off : in->skip;
			off += k;
			in->skip -= k;
			if (in->skip)
				break;
		}
		const char *msg;
		size_t mlen;
		ssize_t f = spawner_frame_parse(in->buf + off, in->len - off, &msg, &mlen);
		if (f == 0)
			break;
		if (f == -EMSGSIZE) {
			const unsigned char *u = (const unsigned char *)in->buf + off;
			in->skip = 4 + ((size_t)u[0] << 24 | (size_t)u[1] << 16 |
			                (size_t)u[2] << 8 | u[3]);
			struct sk_error err;
			sk_error_set(&err, -EMSGSIZE, "a request is at most %d bytes",
			             SPAWNER_MAX_MSG_BYTES);
			reply_error(sp, NULL, &err);
			continue;
		}
		request_handle(sp, msg, mlen);
		off += (size_t)f;
	}
	memmove(in->buf, in->buf + off, in->len - off);
	in->len -= off;
	/* Don't keep a large buffer for one large request. */
	if (in->len == 0 && in->cap > 4 * SP_READ_CHUNK_BYTES) {
		free(in->buf);
		in->buf = NULL;
		in->cap = 0;
	}
	return 1;
}

/* ---- the loop ---- */

enum {
	W_SOCKET,
	W_INIT,
	W_OOM,
	W_EXEC,
	W_EXEC_START,
	W_CREATE,
	W_STDIN,
	W_HOLDER,
	W_FOP_PIPE,
	W_FOP_PID,
	W_INOTIFY,
	W_STATUS,
	W_POOL,
	W_JOB_PIPE,
	W_JOB_PID
};
struct watch {
	int kind;
	struct sp_sandbox *s;
	struct sp_exec *e;
	struct sp_fop *fop;
	struct sp_job *job;
	struct sp_starting *st;
};

static void timer_min(int64_t *next, int64_t t)
{
	if (t > 0 && (*next == 0 || t < *next))
		*next = t;
}

static int64_t timers_next(struct spawner *sp)
{
	int64_t next = sp->trim_mono;
	timer_min(&next, sp_files_next_deadline(sp));
	timer_min(&next, sp_oreads_next(sp));
	for (struct sp_sandbox *s = sp->sandboxes; s; s = s->next) {
		if (s->state == SP_RUNNING) {
			timer_min(&next, s->deadline_mono);
			timer_min(&next, s->kill_mono);
			timer_min(&next, s->term_check_mono);
			timer_min(&next, s->oom_recheck_mono);
		}
		for (struct sp_exec *e = s->starting; e; e = e->next)
			timer_min(&next, rt_exec_start_deadline_ms(e->start));
		timer_min(&next, sp_exec_queue_deadline(s));
		for (struct sp_exec *e = s->execs; e; e = e->next) {
			if (!e->running)
				continue;
			timer_min(&next, e->recheck_mono);
			if (e->in.req_id)
				timer_min(&next, e->in.deadline_mono);
			if (!e->exited_mono)
				timer_min(&next, e->deadline_mono);
		}
	}
	return next;
}

static void timers_run(struct spawner *sp, int64_t now)
{
	sp_sandbox_timers(sp, now);
	for (struct sp_sandbox *s = sp->sandboxes; s; s = s->next)
		sp_exec_timers(sp, s, now);
	if (now >= sp->trim_mono) {
		sp_outputs_trim(sp);
		struct sk_error err = {0};
		if (sp->egress_ok && egress_check(&sp->egress, &err) < 0)
			sp_log("error", "network egress: %s", err.msg);
		sp->trim_mono = now + SPAWNER_OUTPUT_CHECK_MS;
	}
}

static void pool_fill_failed(struct spawner *sp, const struct sk_error *err)
{
	sp_log("error", "fill the pool: %s", err->msg);
	sp->pool.target = sp->pool.n; /* don't spin on a failing make */
}

/* Whether a create or an exec begun less than a refill's quiet ago is on its way: a refill
 * now would hold its answer for the refill's part in the loop. An older one is held by its
 * sandbox (its init stopped, say), and holds no refill. */
static int start_just_begun(const struct watch *w, size_t k, int64_t now)
{
	for (size_t i = 0; i < k; i++) {
		int64_t begun =
		    w[i].kind == W_EXEC_START
		        ? rt_exec_start_deadline_ms(w[i].e->start) - RT_EXEC_START_TIMEOUT_MS
		    : w[i].kind == W_CREATE ? w[i].st->begun_mono
		                            : 0;
		if (begun && now - begun < SP_REFILL_QUIET_MS)
			return 1;
	}
	return 0;
}

static int loop(struct spawner *sp)
{
	struct inbuf in = {0};
	struct pollfd *pfds = NULL;
	struct watch *w = NULL;
	size_t cap = 0;
	int ret = 0;
	for (;;) {
		size_t n = 4; /* the socket, output reads' inotify, statuses' inotify, the pool */
		for (struct sp_sandbox *s = sp->sandboxes; s; s = s->next)
			n += 2 + 3 * (size_t)s->nexecs + (size_t)s->nstarting;
		for (struct sp_fop *o = sp->fops; o; o = o->next)
			n += 2;
		n += 2 * (size_t)sp->njobs + (size_t)sp->nstarting;
		if (n > cap) {
			free(pfds);
			free(w);
			cap = n * 2;
			pfds = calloc(cap, sizeof(*pfds));
			w = calloc(cap, sizeof(*w));
			if (!pfds || !w) {
				sp_log("error", "out of memory");
				ret = 1;
				break;
			}
		}
		size_t k = 0;
		pfds[k] = (struct pollfd){.fd = sp->fd, .events = POLLIN};
		w[k++] = (struct watch){.kind = W_SOCKET};
		for (struct sp_sandbox *s = sp->sandboxes; s; s = s->next) {
			if (s->state == SP_RUNNING) {
				pfds[k] = (struct pollfd){.fd = rt_sandbox_pidfd(s->sb),
				                          .events = POLLIN};
				w[k++] = (struct watch){.kind = W_INIT, .s = s};
				short ev;
				int ofd = rt_sandbox_oom_fd(s->sb, &ev);
				if (ofd >= 0) {
					pfds[k] = (struct pollfd){.fd = ofd, .events = ev};
					w[k++] = (struct watch){.kind = W_OOM, .s = s};
				}
			}
			for (struct sp_exec *e = s->starting; e; e = e->next) {
				pfds[k].fd = rt_exec_start_fd(e->start, &pfds[k].events);
				pfds[k].revents = 0;
				w[k++] = (struct watch){.kind = W_EXEC_START, .s = s, .e = e};
			}
			for (struct sp_exec *e = s->execs; e; e = e->next) {
				if (e->in.holder_pidfd >= 0) {
					pfds[k] = (struct pollfd){.fd = e->in.holder_pidfd,
					                          .events = POLLIN};
					w[k++] = (struct watch){.kind = W_HOLDER, .s = s, .e = e};
				}
				if (e->in.req_id && e->in.fd >= 0) {
					pfds[k] =
					    (struct pollfd){.fd = e->in.fd, .events = POLLOUT};
					w[k++] = (struct watch){.kind = W_STDIN, .s = s, .e = e};
				}
				if (!e->running || e->exited_mono || e->ex.pidfd < 0)
					continue;
				pfds[k] = (struct pollfd){.fd = e->ex.pidfd, .events = POLLIN};
				w[k++] = (struct watch){.kind = W_EXEC, .s = s, .e = e};
			}
		}
		for (struct sp_fop *o = sp->fops; o; o = o->next) {
			if (o->pipe_fd >= 0) {
				pfds[k] = (struct pollfd){.fd = o->pipe_fd, .events = POLLIN};
				w[k++] = (struct watch){.kind = W_FOP_PIPE, .fop = o};
			}
			if (o->pidfd >= 0) {
				pfds[k] = (struct pollfd){.fd = o->pidfd, .events = POLLIN};
				w[k++] = (struct watch){.kind = W_FOP_PID, .fop = o};
			}
		}
		for (struct sp_job *j = sp->jobs; j; j = j->next) {
			if (j->pipe_fd >= 0) {
				pfds[k] = (struct pollfd){.fd = j->pipe_fd, .events = POLLIN};
				w[k++] = (struct watch){.kind = W_JOB_PIPE, .job = j};
			}
			if (j->pidfd >= 0) {
				pfds[k] = (struct pollfd){.fd = j->pidfd, .events = POLLIN};
				w[k++] = (struct watch){.kind = W_JOB_PID, .job = j};
			}
		}
		if (sp->oreads && sp->ino_fd >= 0) {
			pfds[k] = (struct pollfd){.fd = sp->ino_fd, .events = POLLIN};
			w[k++] = (struct watch){.kind = W_INOTIFY};
		}
		if (sp->status_ino_fd >= 0) {
			pfds[k] = (struct pollfd){.fd = sp->status_ino_fd, .events = POLLIN};
			w[k++] = (struct watch){.kind = W_STATUS};
		}
		for (struct sp_starting *st = sp->starting; st; st = st->next) {
			pfds[k] =
			    (struct pollfd){.fd = rt_sandbox_ready_fd(st->sb), .events = POLLIN};
			w[k++] = (struct watch){.kind = W_CREATE, .st = st};
		}
		if (rt_pool_making_fd(&sp->pool) >= 0) {
			pfds[k] =
			    (struct pollfd){.fd = rt_pool_making_fd(&sp->pool), .events = POLLIN};
			w[k++] = (struct watch){.kind = W_POOL};
		}
		int64_t now = sp_now_mono();
		int64_t next = timers_next(sp);
		int timeout = next ? (int)(next > now ? next - now : 0) : -1;
		int refill = sp->pool.n < sp->pool.target && !sp->pool.making &&
		             !start_just_begun(w, k, now);
		if (refill) {
			int64_t quiet =
			    sp->pool.n == 0 ? now : sp->last_request_mono + SP_REFILL_QUIET_MS;
			int wait = quiet > now ? (int)(quiet - now) : 0;
			if (timeout < 0 || wait < timeout)
				timeout = wait;
			refill = wait == 0;
		}
		int pr = poll(pfds, k, timeout);
		if (pr < 0 && errno != EINTR) {
			sp_log("error", "poll: %s", strerror(errno));
			ret = 1;
			break;
		}
		now = sp_now_mono();
		if (pr == 0 && refill && (!next || next > now)) {
			/* Idle: one sandbox for the pool, so a request waits for one make at most.
			 * Its init makes it while requests are served (W_POOL).
			 */
			struct sk_error err = {0};
			if (rt_pool_fill_begin(&sp->pool, &err) < 0)
				pool_fill_failed(sp, &err);
			continue;
		}
		for (size_t i = 1; pr > 0 && i < k; i++) {
			if (!pfds[i].revents)
				continue;
			switch (w[i].kind) {
			case W_INIT:
				if (w[i].s->state == SP_RUNNING)
					sp_sandbox_end(sp, w[i].s);
				break;
			case W_OOM: sp_sandbox_oom(sp, w[i].s); break;
			case W_EXEC: sp_exec_check(sp, w[i].s, w[i].e, now); break;
			case W_EXEC_START: sp_exec_start_step(sp, w[i].s, w[i].e); break;
			case W_CREATE: sp_create_step(sp, w[i].st); break;
			case W_STDIN: sp_stdin_writable(sp, w[i].s, w[i].e); break;
			case W_HOLDER:
				sp_stdin_holder_exited(w[i].e);
				if (w[i].e->running && w[i].e->status_known)
					sp_exec_check(sp, w[i].s, w[i].e, now); /* drained */
				break;
			case W_FOP_PIPE: sp_fop_read(sp, w[i].fop); break;
			case W_FOP_PID: sp_fop_reap(sp, w[i].fop); break;
			case W_INOTIFY: sp_oreads_inotify(sp); break;
			case W_STATUS: sp_exec_status_inotify(sp, now); break;
			case W_POOL: {
				struct sk_error err = {0};
				if (rt_pool_fill_end(&sp->pool, &err) < 0)
					pool_fill_failed(sp, &err);
				break;
			}
			case W_JOB_PIPE: sp_job_read(sp, w[i].job); break;
			case W_JOB_PID: sp_job_reap(sp, w[i].job); break;
			}
		}
		/* Jobs are freed here only: after the watches that point at them. */
		sp_jobs_run(sp);
		events_flush(sp);
		/* The socket last: its requests may free what the other watches point at (file
		 * ops are freed only by sp_files_run). */
		int eof = pr > 0 && pfds[0].revents && !input_read(sp, &in);
		if (eof)
			break;
		now = sp_now_mono();
		timers_run(sp, now);
		sp_files_run(sp, now);
		sp_oreads_run(sp, now);
		events_flush(sp);
	}
	sp_files_release(sp);
	sp_oreads_release(sp);
	if (sp->status_ino_fd >= 0)
		close(sp->status_ino_fd);
	sp_jobs_release(sp);
	free(pfds);
	free(w);
	free(in.buf);
	return ret;
}

/* The stdin holder program's path: STDIN_HOLDER_NAME in our own binary's directory. 0 when it
 * is there, else -errno (buf holds what was looked for). */
static int holder_path_find(char *buf, size_t size)
{
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0)
		return -errno;
	self[n] = '\0';
	char *slash = strrchr(self, '/');
	if (slash)
		*slash = '\0';
	if ((size_t)snprintf(buf, size, "%s/%s", self, STDIN_HOLDER_NAME) >= size)
		return -ENAMETOOLONG;
	return access(buf, X_OK) < 0 ? -errno : 0;
}

int spawner_main(const struct spawner_config *cfg, int fd)
{
	signal(SIGPIPE, SIG_IGN);
	prctl(PR_SET_NAME, "skiff-spawner");
	/* Each running sandbox holds about ten fds (pidfd, socket, lock, OOM fd, cgroups). */
	struct rlimit nofile;
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
		nofile.rlim_cur = nofile.rlim_max;
		setrlimit(RLIMIT_NOFILE, &nofile);
	}
	struct spawner sp = {.cfg = cfg,
	                     .fd = fd,
	                     .ino_fd = -1,
	                     .status_ino_fd = -1,
	                     .reply_fd = -1,
	                     .store_lock_fd = -1};
	struct sk_error err = {0};
	int ret = 1;
	if (cfg->stdin_holder)
		snprintf(sp.holder_path, sizeof(sp.holder_path), "%s", cfg->stdin_holder);
	else if (holder_path_find(sp.holder_path, sizeof(sp.holder_path)) < 0)
		sp_log("error",
		       "start: no stdin holder next to /proc/self/exe (%s): execs with "
		       "stdin or a terminal will fail",
		       sp.holder_path);
	sp.events = json_array();
	spec_init(&sp.pool_base);
	if (rt_init(&sp.rt, cfg->instance, cfg->run_dir, &err) < 0) {
		sp_log("error", "start: %s", err.msg);
		json_decref(sp.events);
		return 1;
	}
	if (image_busybox_ensure(cfg->data_dir, cfg->busybox, sp.rootfs, sizeof(sp.rootfs), &err) <
	    0) {
		sp_log("error", "start: %s", err.msg);
		goto out;
	}
	/* Writable layers: btrfs subvolumes on the data directory's disk, unless SKIFF_DISK_BACKEND
	 * says otherwise or btrfs can't be had. */
	enum rt_disk_backend backend = RT_DISK_AUTO;
	const char *want = getenv("SKIFF_DISK_BACKEND");
	if (want && rt_disk_backend_parse(want, &backend) < 0) {
		sp_log("error",
		       "start: SKIFF_DISK_BACKEND: expected auto, btrfs or tmpfs, got '%s'", want);
		goto out;
	}
	if (rt_disk_setup(&sp.rt, cfg->data_dir, backend, 1, &err) < 0) {
		sp_log("error", "start: %s", err.msg);
		goto out;
	}
	if (sp.rt.disk.why_tmpfs[0])
		sp_log("warning", "disk: no btrfs (%s): writable layers are tmpfs, in memory",
		       sp.rt.disk.why_tmpfs);
	/* What a crashed spawner left: its pool, starts cut short. Ended sandboxes stay. */
	if (rt_gc_keep_ended(&sp.rt, &err) < 0)
		sp_log("error", "gc: %s", err.msg);
	struct egress_config egress_defaults;
	egress_config_init(&egress_defaults);
	if (egress_init(&sp.egress, &sp.rt, cfg->egress ? cfg->egress : &egress_defaults, &err) < 0)
		sp_log("error", "network egress is unavailable: %s", err.msg);
	else
		sp.egress_ok = 1;
	sp_images_open(&sp, backend != RT_DISK_TMPFS);
	if (rt_pool_init(&sp.pool, &sp.rt, &sp.pool_base, sp.rootfs,
	                 cfg->pool_size > 0 ? cfg->pool_size : 0, &err) < 0) {
		sp_log("error", "start: %s", err.msg);
		goto out;
	}
	sp.pool.flags = RT_START_DETACHED | RT_START_INIT_EXECS;
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	sp.trim_mono = sp_now_mono() + SPAWNER_OUTPUT_CHECK_MS;
	ret = loop(&sp);
	sp_creates_release(&sp);
	rt_pool_release(&sp.pool);
out:
	while (sp.sandboxes) {
		struct sp_sandbox *s = sp.sandboxes;
		sp.sandboxes = s->next;
		sp_sandbox_free(s); /* detached: they run on */
	}
	/* The store first: its hold on the disk would keep the disk's unmount below from taking the
	 * lock. */
	sp_images_close(&sp);
	/* A clean stop: the instance's parent cgroups, directories and disk go when nothing of it
	 * is left (sandboxes that run on keep them). */
	rt_instance_remove_if_idle(&sp.rt);
	spec_release(&sp.pool_base);
	json_decref(sp.events);
	if (sp.egress_ok)
		egress_release(&sp.egress);
	rt_release(&sp.rt);
	return ret;
}

int spawner_start(const struct spawner_config *cfg, struct spawner_proc *ret, struct sk_error *err)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return sk_error_errno(err, -errno, "socketpair");
	pid_t pid = fork();
	if (pid < 0) {
		int r = -errno;
		close(sv[0]);
		close(sv[1]);
		return sk_error_errno(err, r, "fork the spawner");
	}
	if (pid == 0) {
		close(sv[0]);
		int keep[1] = {sv[1]};
		fs_close_all_except(keep, 1);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		/* The daemon's stop signals are the daemon's: a service manager or a terminal that
		 * signals the whole group must not end the spawner before it has released its pool.
		 * It ends at EOF on its socket, when the daemon is gone. */
		signal(SIGTERM, SIG_IGN);
		signal(SIGINT, SIG_IGN);
		signal(SIGHUP, SIG_IGN);
		if (cfg->in_child)
			cfg->in_child();
		_exit(spawner_main(cfg, sv[1]));
	}
	close(sv[1]);
	ret->pid = pid;
	ret->fd = sv[0];
	return 0;
}

void spawner_stop(struct spawner_proc *sp)
{
	if (sp->fd >= 0)
		close(sp->fd);
	sp->fd = -1;
	if (sp->pid > 0)
		while (waitpid(sp->pid, NULL, 0) < 0 && errno == EINTR)
			;
	sp->pid = 0;
}
