/* A priority queue of timed entries: a binary min-heap on an int64 key (a time in ms). Each
 * entry embeds a struct prioq_node that remembers its place, so re-keying and removing an entry
 * take O(log n) without a search. The queue does not own its entries: remove an entry before it
 * is freed. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct prioq_node {
	int64_t key;
	size_t slot; /* its index + 1 in the heap; 0: not queued */
};

struct prioq {
	struct prioq_node **items;
	size_t len, cap;
};

void prioq_init(struct prioq *q);
/* Frees the heap; the entries are the caller's. */
void prioq_release(struct prioq *q);
/* Queue n with key, or move it to key if it is queued. Returns 0 or -ENOMEM (n unchanged). */
int prioq_put(struct prioq *q, struct prioq_node *n, int64_t key);
/* Take n out of the queue; nothing when it is not queued. */
void prioq_remove(struct prioq *q, struct prioq_node *n);
/* The entry with the smallest key, or NULL when the queue is empty. */
struct prioq_node *prioq_peek(const struct prioq *q);
static inline int prioq_queued(const struct prioq_node *n)
{
	return n->slot != 0;
}
