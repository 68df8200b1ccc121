/* A hash map from NUL-terminated string keys to pointers (open addressing, linear probing). The
 * map does not own keys or values: a key must stay valid while it is in the map (point it into
 * the value). */
#pragma once

#include <stddef.h>

struct map_slot {
	const char *key; /* NULL: empty */
	void *value;
	int tomb; /* removed: probing goes on past it */
};

struct map {
	struct map_slot *slots;
	size_t cap;  /* a power of two, or 0 */
	size_t len;  /* live entries */
	size_t used; /* live + tombstones */
};

void map_init(struct map *m);
void map_release(struct map *m);
/* The value under key, or NULL. */
void *map_get(const struct map *m, const char *key);
/* Insert or replace. Returns 0 or -ENOMEM. */
int map_put(struct map *m, const char *key, void *value);
/* Remove key; returns its value or NULL. */
void *map_remove(struct map *m, const char *key);
/* Iterate: start with *pos = 0; returns the next value or NULL at the end. Don't insert while
 * iterating (removing the current entry is fine). */
void *map_next(const struct map *m, size_t *pos);
