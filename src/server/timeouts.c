/* Sandbox timeouts, enforced by the server whatever the worker does: timeout_s counts from a
 * sandbox's start (PATCH moves it), idle_timeout_s from its last I/O through the API or the end
 * of its last exec or tunnel, and never while an exec is pending or running or a tunnel to one
 * of its ports is open.
 *
 * Running sandboxes wait in one priority queue, keyed by when to look at each, and one timer
 * fires at the first. The queue is lazy: I/O only moves a sandbox's idle clock (sandbox_touch
 * stores a time), and when its entry comes up with its real deadline still ahead it is queued
 * again for then. A key is never later than its sandbox's next deadline: whatever moves one
 * earlier requeues it (sandbox_timeouts_update).
 *
 * At a deadline the server sends the worker `terminate` with no grace (SIGKILL at once, like the
 * spawner's own timeout) that keeps the sandbox's output, and records the end itself
 * SERVER_TIMEOUT_MARGIN_MS later if the worker has not reported it by then, or at once when the
 * worker is not connected. Either way the end is `timeout`, 124: an end the worker reports later
 * as terminated or lost is that timeout (sandbox_set_ended), and one that comes after the end
 * was recorded changes nothing. */
#include <stddef.h>
#include <string.h>

#include "../lib/clock.h"
#include "server.h"

static void timeouts_fire(uv_timer_t *t);

static struct sandbox_rec *sandbox_of_timer(struct prioq_node *n)
{
	return (struct sandbox_rec *)((char *)n - offsetof(struct sandbox_rec, timer));
}

/* A spec's duration in ms; 0 for none (null, absent, 0). */
static int64_t spec_ms(const struct sandbox_rec *sb, const char *key)
{
	double s = json_number_value(json_object_get(sb->spec, key));
	return s > 0 ? (int64_t)(s * 1000) : 0;
}

/* When to look at sb next; 0: never (it is not running, or nothing can end it now). */
static int64_t sandbox_due_ms(const struct sandbox_rec *sb)
{
	if (strcmp(sb->row.state, "running"))
		return 0;
	if (sb->timeout_end_ms)
		return sb->timeout_end_ms;
	int64_t due = sb->row.deadline_ms;
	int64_t idle = spec_ms(sb, "idle_timeout_s");
	if (idle && !sb->execs_live && !sb->tunnels_live && (!due || sb->active_ms + idle < due))
		due = sb->active_ms + idle;
	return due;
}

/* Queue sb to be looked at when due (0: out of the queue). Returns 0 or -ENOMEM. */
static int timer_set(struct server *srv, struct sandbox_rec *sb, int64_t due)
{
	if (!due) {
		prioq_remove(&srv->timeouts, &sb->timer);
		return 0;
	}
	return prioq_put(&srv->timeouts, &sb->timer, due);
}

static void timer_arm(struct server *srv)
{
	if (!srv->timeouts_timer.loop || srv->stopping)
		return;
	struct prioq_node *first = prioq_peek(&srv->timeouts);
	if (!first) {
		uv_timer_stop(&srv->timeouts_timer);
		return;
	}
	int64_t wait_ms = first->key - clock_now_ms();
	uv_timer_start(&srv->timeouts_timer, timeouts_fire, wait_ms > 0 ? (uint64_t)wait_ms : 0, 0);
}

void sandbox_touch(struct server *srv, struct sandbox_rec *sb)
{
	(void)
	    srv; /* the deadline only moves later: its queue entry is looked at when it comes up */
	if (!strcmp(sb->row.state, "running"))
		sb->active_ms = clock_now_ms();
}

void sandbox_timeouts_update(struct server *srv, struct sandbox_rec *sb)
{
	int64_t due = sandbox_due_ms(sb);
	if (due && prioq_queued(&sb->timer) && sb->timer.key <= due)
		return; /* a later deadline is found when the entry comes up */
	if (timer_set(srv, sb, due) < 0)
		server_logf(srv,
		            "level=error msg=\"out of memory: the server does not time the "
		            "sandbox\" sandbox=%s",
		            sb->row.id);
	timer_arm(srv);
}

/* sb's deadline, idle or not, has come; or the worker has not ended it in time. */
static void sandbox_time_up(struct server *srv, struct sandbox_rec *sb, int64_t now)
{
	prioq_remove(&srv->timeouts, &sb->timer);
	if (sb->timeout_end_ms) {
		server_logf(srv,
		            "level=warn msg=\"the worker did not end a timed-out sandbox: ended "
		            "here\" sandbox=%s worker=%s",
		            sb->row.id, sb->row.worker_id);
		sandbox_set_ended(srv, sb, "timeout", 124, 0);
		return;
	}
	int deadline = sb->row.deadline_ms && now >= sb->row.deadline_ms;
	server_logf(srv, "level=info msg=\"sandbox timed out\" sandbox=%s limit=%s", sb->row.id,
	            deadline ? "timeout_s" : "idle_timeout_s");
	sb->timeout_end_ms = now + SERVER_TIMEOUT_MARGIN_MS;
	if (sb->worker && sb->worker->connected) {
		json_t *cmd = json_pack("{s:s, s:i, s:b}", "sandbox", sb->row.id, "grace_ms",
		                        SERVER_TIMEOUT_GRACE_MS, "remove", 0);
		if (link_command(srv, sb->worker, "terminate", cmd) == 0 &&
		    timer_set(srv, sb, sb->timeout_end_ms) == 0)
			return;
	}
	sandbox_set_ended(srv, sb, "timeout", 124, 0);
}

static void timeouts_fire(uv_timer_t *t)
{
	struct server *srv = t->data;
	int64_t now = clock_now_ms();
	struct prioq_node *first;
	while (!srv->stopping && (first = prioq_peek(&srv->timeouts)) && first->key <= now) {
		struct sandbox_rec *sb = sandbox_of_timer(first);
		int64_t due = sandbox_due_ms(sb);
		if (!due || due > now)
			timer_set(srv, sb, due); /* re-keys a queued entry: no allocation */
		else
			sandbox_time_up(srv, sb, now);
	}
	timer_arm(srv);
}

void timeouts_start(struct server *srv)
{
	uv_timer_init(srv->loop, &srv->timeouts_timer);
	srv->timeouts_timer.data = srv;
	int64_t now = clock_now_ms();
	size_t pos = 0;
	struct sandbox_rec *sb;
	while ((sb = map_next(&srv->sandboxes, &pos))) {
		if (strcmp(sb->row.state, "running"))
			continue;
		/* The deadline is rebuilt from the start and timeout_s as last set. What happened
		 * while the server was down is not known: idle clocks start again now. */
		int64_t timeout = spec_ms(sb, "timeout_s");
		sb->row.deadline_ms = timeout ? sb->row.started_ms + timeout : 0;
		sb->active_ms = now;
		sandbox_timeouts_update(srv, sb);
	}
}

void timeouts_stop(struct server *srv)
{
	if (srv->timeouts_timer.loop)
		uv_timer_stop(&srv->timeouts_timer);
}
