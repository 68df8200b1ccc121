#include "prioq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PRIOQ_MIN_CAP 16

void prioq_init(struct prioq *q)
{
	memset(q, 0, sizeof(*q));
}

void prioq_release(struct prioq *q)
{
	for (size_t i = 0; i < q->len; i++)
		q->items[i]->slot = 0;
	free(q->items);
	prioq_init(q);
}

static void place(struct prioq *q, size_t i, struct prioq_node *n)
{
	q->items[i] = n;
	n->slot = i + 1;
}

static void sift_up(struct prioq *q, size_t i)
{
	struct prioq_node *n = q->items[i];
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (q->items[parent]->key <= n->key)
			break;
		place(q, i, q->items[parent]);
		i = parent;
	}
	place(q, i, n);
}

static void sift_down(struct prioq *q, size_t i)
{
	struct prioq_node *n = q->items[i];
	for (;;) {
		size_t child = 2 * i + 1;
		if (child >= q->len)
			break;
		if (child + 1 < q->len && q->items[child + 1]->key < q->items[child]->key)
			child++;
		if (n->key <= q->items[child]->key)
			break;
		place(q, i, q->items[child]);
		i = child;
	}
	place(q, i, n);
}

int prioq_put(struct prioq *q, struct prioq_node *n, int64_t key)
{
	if (n->slot) {
		int64_t old = n->key;
		n->key = key;
		if (key < old)
			sift_up(q, n->slot - 1);
		else if (key > old)
			sift_down(q, n->slot - 1);
		return 0;
	}
	if (q->len == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : PRIOQ_MIN_CAP;
		struct prioq_node **items = reallocarray(q->items, cap, sizeof(*items));
		if (!items)
			return -ENOMEM;
		q->items = items;
		q->cap = cap;
	}
	n->key = key;
	place(q, q->len++, n);
	sift_up(q, q->len - 1);
	return 0;
}

void prioq_remove(struct prioq *q, struct prioq_node *n)
{
	if (!n->slot)
		return;
	size_t i = n->slot - 1;
	n->slot = 0;
	struct prioq_node *last = q->items[--q->len];
	if (i == q->len)
		return;
	/* The last entry fills the hole: it may belong above or below it. */
	place(q, i, last);
	sift_up(q, i);
	sift_down(q, last->slot - 1);
}

struct prioq_node *prioq_peek(const struct prioq *q)
{
	return q->len ? q->items[0] : NULL;
}
