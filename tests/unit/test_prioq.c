/* The priority queue (src/lib/prioq): entries come out in key order, re-keying up and down and
 * removing from any place keep the heap and every entry's slot right, checked against a plain
 * scan after each of many random operations. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "../../src/lib/prioq.h"

#define NENTRIES 500
#define NSTEPS   20000

/* Every entry's slot points back at it, every parent's key is at most its children's, and the
 * queued entries are exactly those that say so. */
static void check_heap(const struct prioq *q, struct prioq_node *all, size_t n)
{
	size_t queued = 0;
	for (size_t i = 0; i < n; i++)
		if (prioq_queued(&all[i])) {
			queued++;
			assert_true(all[i].slot <= q->len);
			assert_ptr_equal(q->items[all[i].slot - 1], &all[i]);
		}
	assert_int_equal(queued, q->len);
	for (size_t i = 1; i < q->len; i++)
		assert_true(q->items[(i - 1) / 2]->key <= q->items[i]->key);
}

static int64_t scan_min(struct prioq_node *all, size_t n)
{
	int64_t min = INT64_MAX;
	for (size_t i = 0; i < n; i++)
		if (prioq_queued(&all[i]) && all[i].key < min)
			min = all[i].key;
	return min;
}

static void test_order(void **state)
{
	(void)state;
	struct prioq q;
	prioq_init(&q);
	assert_null(prioq_peek(&q));
	struct prioq_node nodes[100] = {0};
	for (int i = 0; i < 100; i++)
		assert_int_equal(prioq_put(&q, &nodes[i], (i * 37) % 100), 0);
	for (int64_t want = 0; want < 100; want++) {
		struct prioq_node *top = prioq_peek(&q);
		assert_non_null(top);
		assert_int_equal(top->key, want);
		prioq_remove(&q, top);
		assert_false(prioq_queued(top));
	}
	assert_null(prioq_peek(&q));
	prioq_release(&q);
}

static void test_rekey_and_remove(void **state)
{
	(void)state;
	struct prioq q;
	prioq_init(&q);
	struct prioq_node a = {0}, b = {0}, c = {0};
	assert_int_equal(prioq_put(&q, &a, 10), 0);
	assert_int_equal(prioq_put(&q, &b, 20), 0);
	assert_int_equal(prioq_put(&q, &c, 30), 0);
	assert_int_equal(prioq_put(&q, &c, 5), 0); /* earlier: to the top */
	assert_ptr_equal(prioq_peek(&q), &c);
	assert_int_equal(q.len, 3);
	assert_int_equal(prioq_put(&q, &c, 40), 0); /* later: down again */
	assert_ptr_equal(prioq_peek(&q), &a);
	prioq_remove(&q, &a);
	prioq_remove(&q, &a); /* not queued: nothing */
	assert_int_equal(q.len, 2);
	assert_ptr_equal(prioq_peek(&q), &b);
	prioq_release(&q);
	assert_false(prioq_queued(&b));
	assert_false(prioq_queued(&c));
	assert_null(prioq_peek(&q));
}

static void test_random_against_scan(void **state)
{
	(void)state;
	struct prioq q;
	prioq_init(&q);
	struct prioq_node *all = calloc(NENTRIES, sizeof(*all));
	assert_non_null(all);
	srand(7);
	for (int step = 0; step < NSTEPS; step++) {
		struct prioq_node *n = &all[rand() % NENTRIES];
		if (rand() % 3 == 0)
			prioq_remove(&q, n);
		else
			assert_int_equal(prioq_put(&q, n, rand() % 1000), 0);
		if (step % 97 == 0)
			check_heap(&q, all, NENTRIES);
		struct prioq_node *top = prioq_peek(&q);
		if (top)
			assert_int_equal(top->key, scan_min(all, NENTRIES));
		else
			assert_int_equal(q.len, 0);
	}
	check_heap(&q, all, NENTRIES);
	prioq_release(&q);
	free(all);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_order),
	    cmocka_unit_test(test_rekey_and_remove),
	    cmocka_unit_test(test_random_against_scan),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
