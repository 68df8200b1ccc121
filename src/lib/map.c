#include "map.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

void map_init(struct map *m)
{
	memset(m, 0, sizeof(*m));
}

void map_release(struct map *m)
{
	free(m->slots);
	map_init(m);
}

static struct map_slot *find(const struct map *m, const char *key)
{
	if (!m->cap)
		return NULL;
	size_t mask = m->cap - 1;
	for (size_t i = hash_str(key) & mask, n = 0; n < m->cap; i = (i + 1) & mask, n++) {
		struct map_slot *s = &m->slots[i];
		if (!s->key && !s->tomb)
			return NULL;
		if (s->key && !strcmp(s->key, key))
			return s;
	}
	return NULL;
}

static int grow(struct map *m)
{
	size_t cap = m->cap ? m->cap * 2 : 16;
	if (m->len * 4 < m->cap) /* mostly tombstones: rehash at the same size */
		cap = m->cap;
	struct map_slot *slots = calloc(cap, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; i < m->cap; i++) {
		struct map_slot *s = &m->slots[i];
		if (!s->key)
			continue;
		size_t j = hash_str(s->key) & (cap - 1);
		while (slots[j].key)
			j = (j + 1) & (cap - 1);
		slots[j] = *s;
	}
	free(m->slots);
	m->slots = slots;
	m->cap = cap;
	m->used = m->len;
	return 0;
}

void *map_get(const struct map *m, const char *key)
{
	struct map_slot *s = find(m, key);
	return s ? s->value : NULL;
}

int map_put(struct map *m, const char *key, void *value)
{
	struct map_slot *s = find(m, key);
	if (s) {
		s->key = key;
		s->value = value;
		return 0;
	}
	if ((m->used + 1) * 4 > m->cap * 3) {
		int r = grow(m);
		if (r < 0)
			return r;
	}
	size_t mask = m->cap - 1;
	size_t i = hash_str(key) & mask;
	while (m->slots[i].key)
		i = (i + 1) & mask;
	if (!m->slots[i].tomb)
		m->used++;
	m->slots[i] = (struct map_slot){.key = key, .value = value};
	m->len++;
	return 0;
}

void *map_remove(struct map *m, const char *key)
{
	struct map_slot *s = find(m, key);
	if (!s)
		return NULL;
	void *v = s->value;
	*s = (struct map_slot){.tomb = 1};
	m->len--;
	return v;
}

void *map_next(const struct map *m, size_t *pos)
{
	while (*pos < m->cap) {
		struct map_slot *s = &m->slots[(*pos)++];
		if (s->key)
			return s->value;
	}
	return NULL;
}
