/* The store's thread and group commit. The loop queues work (store_submit); the thread takes all
 * that is queued, runs each function in a savepoint of one transaction, commits once, and hands
 * the finished work back to the loop through a uv_async_t, where each done runs. Work queued
 * while a batch commits waits for the next batch: under load, batches grow by themselves.
 *
 * The uv_async_t lives in a notifier of its own rather than in the store, so that store_close can
 * free the store at once while the notifier lives on until its close callback, which delivers
 * whatever callbacks remain: every done runs exactly once, on the loop. */
#include <assert.h>
#include <signal.h>
#include <string.h>

#include "sqlite_internal.h"

struct store_job {
	store_fn fn;
	store_done_fn done;
	void *ud;
	int rc;
	struct store_job *next;
};

struct store_notifier {
	uv_async_t async;
	pthread_mutex_t lock; /* guards head/tail: the thread appends, the loop takes */
	struct store_job *head, *tail;
	uint64_t outstanding; /* submitted, done not yet run (loop thread only) */
};

/* Run every job of the batch that has not been delivered: on the loop's thread. */
static void notifier_deliver(struct store_notifier *n)
{
	for (;;) {
		pthread_mutex_lock(&n->lock);
		struct store_job *job = n->head;
		if (job) {
			n->head = job->next;
			if (!n->head)
				n->tail = NULL;
		}
		pthread_mutex_unlock(&n->lock);
		if (!job)
			return;
		/* The handle keeps the loop alive only while some work is outstanding. */
		if (--n->outstanding == 0)
			uv_unref((uv_handle_t *)&n->async);
		/* One at a time: a done may call store_close, which leaves n to its close callback.
		 */
		if (job->done)
			job->done(job->ud, job->rc);
		free(job);
	}
}

static void notifier_async_cb(uv_async_t *async)
{
	notifier_deliver(async->data);
}

static void notifier_close_cb(uv_handle_t *handle)
{
	struct store_notifier *n = handle->data;
	notifier_deliver(n);
	pthread_mutex_destroy(&n->lock);
	free(n);
}

static int notifier_new(uv_loop_t *loop, struct store_notifier **ret)
{
	struct store_notifier *n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	int r = uv_async_init(loop, &n->async, notifier_async_cb);
	if (r < 0) {
		free(n);
		return r;
	}
	pthread_mutex_init(&n->lock, NULL);
	n->async.data = n;
	uv_unref((uv_handle_t *)&n->async);
	*ret = n;
	return 0;
}

int store_submit(struct store *st, uv_loop_t *loop, store_fn fn, store_done_fn done, void *ud)
{
	assert(fn);
	assert(!st->loop || st->loop == loop);
	if (!st->notifier) {
		int r = notifier_new(loop, &st->notifier);
		if (r < 0)
			return r;
		st->loop = loop;
	}
	struct store_job *job = calloc(1, sizeof(*job));
	if (!job)
		return -ENOMEM;
	job->fn = fn;
	job->done = done;
	job->ud = ud;

	pthread_mutex_lock(&st->lock);
	if (st->queue_tail)
		st->queue_tail->next = job;
	else
		st->queue_head = job;
	st->queue_tail = job;
	pthread_cond_signal(&st->cond);
	pthread_mutex_unlock(&st->lock);

	if (st->notifier->outstanding++ == 0)
		uv_ref((uv_handle_t *)&st->notifier->async);
	return 0;
}

/* The transaction in progress is lost: every job from first up to (not including) stop that
 * succeeded gets r instead. */
static void jobs_fail(struct store_job *first, struct store_job *stop, int r)
{
	for (struct store_job *j = first; j != stop; j = j->next)
		if (j->rc >= 0)
			j->rc = r;
}

/* Run one job inside a savepoint of the open transaction. Returns 0, or a negative errno when
 * the whole transaction is gone (SQLite rolled it back, or we could not undo the job alone). */
static int job_run(struct store_tx *tx, struct store_job *job)
{
	tx->errmsg[0] = '\0';
	int r = store_tx_exec(tx, STMT_SAVEPOINT, "savepoint");
	if (r < 0) {
		job->rc = r;
		return store_tx_aborted(tx) ? r : 0;
	}
	job->rc = job->fn(tx, job->ud);
	if (store_tx_aborted(tx)) {
		/* An I/O error or a full disk rolls the whole transaction back. */
		if (job->rc >= 0)
			job->rc = -EIO;
		return job->rc;
	}
	if (job->rc >= 0) {
		r = store_tx_exec(tx, STMT_RELEASE, "release savepoint");
		if (r == 0)
			return 0;
		job->rc = r;
		if (store_tx_aborted(tx))
			return r;
	}
	r = store_tx_exec(tx, STMT_ROLLBACK_TO, "rollback to savepoint");
	if (r == 0)
		r = store_tx_exec(tx, STMT_RELEASE, "release savepoint");
	if (r < 0) {
		/* We cannot take this job's writes out alone: the transaction must go. */
		if (!store_tx_aborted(tx))
			store_tx_exec(tx, STMT_ROLLBACK, "rollback");
		return r;
	}
	return 0;
}

/* Run a batch in as few transactions as it takes (one, unless SQLite aborts one midway). */
static void batch_run(struct store *st, struct store_job *jobs)
{
	struct store_tx *tx = &st->tx;
	struct store_job *first = NULL; /* first job of the open transaction; NULL: none open */

	pthread_mutex_lock(&st->db_lock);
	for (struct store_job *job = jobs; job; job = job->next) {
		if (!first) {
			int r = store_tx_exec(tx, STMT_BEGIN, "begin");
			if (r < 0) {
				job->rc = r;
				continue;
			}
			first = job;
		}
		int r = job_run(tx, job);
		if (r < 0) {
			jobs_fail(first, job, r);
			first = NULL;
		}
	}
	if (first) {
		int r = store_tx_exec(tx, STMT_COMMIT, "commit");
		if (r < 0) {
			if (!store_tx_aborted(tx))
				store_tx_exec(tx, STMT_ROLLBACK, "rollback");
			jobs_fail(first, NULL, r);
		} else {
			st->commits++;
		}
	}
	pthread_mutex_unlock(&st->db_lock);
}

static void *store_thread_main(void *arg)
{
	struct store *st = arg;
	for (;;) {
		pthread_mutex_lock(&st->lock);
		while (!st->queue_head && !st->stopping)
			pthread_cond_wait(&st->cond, &st->lock);
		struct store_job *jobs = st->queue_head, *last = st->queue_tail;
		st->queue_head = st->queue_tail = NULL;
		/* Jobs exist only once the notifier does; the lock publishes it to us. */
		struct store_notifier *n = st->notifier;
		pthread_mutex_unlock(&st->lock);
		if (!jobs)
			return NULL; /* stopping, and nothing left */

		batch_run(st, jobs);

		pthread_mutex_lock(&n->lock);
		if (n->tail)
			n->tail->next = jobs;
		else
			n->head = jobs;
		n->tail = last;
		pthread_mutex_unlock(&n->lock);
		uv_async_send(&n->async);
	}
}

int store_thread_start(struct store *st, struct sk_error *err)
{
	/* Signals are the loop's business: the thread starts with all of them blocked. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int r = pthread_create(&st->thread, NULL, store_thread_main, st);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0)
		return sk_error_errno(err, -r, "start the store thread");
	st->thread_started = 1;
	return 0;
}

void store_thread_stop(struct store *st)
{
	if (st->thread_started) {
		pthread_mutex_lock(&st->lock);
		st->stopping = 1;
		pthread_cond_signal(&st->cond);
		pthread_mutex_unlock(&st->lock);
		pthread_join(st->thread, NULL);
		st->thread_started = 0;
	}
	if (st->notifier) {
		/* The close callback delivers what the thread finished and the loop did not yet. */
		uv_close((uv_handle_t *)&st->notifier->async, notifier_close_cb);
		st->notifier = NULL;
	}
}
