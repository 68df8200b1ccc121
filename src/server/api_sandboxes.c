/* /v1/sandboxes: create, list, get, patch, wait, delete, exec, exec status. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/clock.h"
#include "../lib/hash.h"
#include "../runtime/spec.h"
#include "server.h"

#define DEFAULT_WAIT_S     60.0
#define TERMINATE_GRACE_MS 3000
#define TERMINATE_EXTRA_S  30.0
#define MAX_TAG_FILTERS    16

/* Idempotency: the reply to a create is stored under its key before it is sent. */
struct idem_write {
	struct api_call *call;
	struct store_idem row;
	json_t *body;
	int status;
};

static int idem_write_fn(struct store_tx *tx, void *ud)
{
	struct idem_write *w = ud;
	return store_idem_put(tx, &w->row);
}

static void idem_write_done(void *ud, int rc)
{
	struct idem_write *w = ud;
	(void)rc; /* the sandbox is created either way; a lost key only means no replay */
	api_reply_json(w->call, w->status, w->body);
	store_idem_release(&w->row);
	free(w);
}

void idem_record(struct api_call *call, int status, json_t *body)
{
	if (!call->idem_key[0]) {
		api_reply_json(call, status, body);
		return;
	}
	struct idem_write *w = calloc(1, sizeof(*w));
	char *text = json_dumps(body, JSON_COMPACT);
	if (!w || !text) {
		free(w);
		free(text);
		api_reply_json(call, status, body);
		return;
	}
	w->call = call;
	w->body = body;
	w->status = status;
	snprintf(w->row.workspace_id, sizeof(w->row.workspace_id), "%s", call->who.workspace_id);
	snprintf(w->row.key, sizeof(w->row.key), "%s", call->idem_key);
	snprintf(w->row.route, sizeof(w->row.route), "POST /v1/sandboxes");
	memcpy(w->row.body_hash, call->idem_hash, sizeof(w->row.body_hash));
	w->row.status = status;
	w->row.response = text;
	w->row.created_ms = clock_now_ms();
	w->row.expires_ms = w->row.created_ms + SERVER_IDEM_TTL_MS;
	if (server_persist(call->srv, idem_write_fn, idem_write_done, w) < 0) {
		store_idem_release(&w->row);
		free(w);
		api_reply_json(call, status, body);
	}
}

/* Create. */
static int tags_valid(json_t *tags, struct api_call *call)
{
	if (!json_is_object(tags)) {
		api_reply_error(call, 400, "invalid_argument",
		                "tags: expected an object of strings");
		return 0;
	}
	if (json_object_size(tags) > SPEC_MAX_TAGS) {
		api_reply_error(call, 400, "invalid_argument", "tags: more than %d", SPEC_MAX_TAGS);
		return 0;
	}
	const char *k;
	json_t *v;
	json_object_foreach (tags, k, v) {
		if (!json_is_string(v) || !k[0] || strlen(k) > SPEC_MAX_TAG_BYTES ||
		    json_string_length(v) > SPEC_MAX_TAG_BYTES ||
		    strlen(json_string_value(v)) != json_string_length(v) || strchr(k, ':')) {
			api_reply_error(
			    call, 400, "invalid_argument",
			    "tags: keys and values are strings of 1-%d bytes, keys without "
			    "':'",
			    SPEC_MAX_TAG_BYTES);
			return 0;
		}
	}
	return 1;
}

/* A duration in seconds of the API: a number more than 0, at most SPEC_MAX_TIMEOUT_S. */
static int seconds_valid(json_t *v, double *ret)
{
	double d = json_number_value(v);
	if (!json_is_number(v) || !isfinite(d) || d <= 0 || d > SPEC_MAX_TIMEOUT_S)
		return 0;
	*ret = d;
	return 1;
}

/* Queue a new sandbox's create for its worker. */
void sandbox_create_command(struct server *srv, struct sandbox_rec *sb)
{
	/* The runtime knows nothing of idleness: the server ends an idle sandbox (timeouts.c). */
	json_t *spec = json_copy(sb->spec);
	if (spec)
		json_object_del(spec, "idle_timeout_s");
	/* The worker knows images by their digest only: "image" (an id) is for the API's view. */
	if (spec && json_object_get(spec, "image_digest"))
		json_object_del(spec, "image");
	json_t *cmd = spec ? json_pack("{s:s, s:o}", "sandbox", sb->row.id, "spec", spec) : NULL;
	if (!cmd || link_command(srv, sb->worker, "create", cmd) < 0)
		sandbox_create_failed(srv, sb, 503, "unavailable",
		                      "the worker can't take commands");
}

/* Live sandboxes: all, and in workspace ws. */
static size_t live_sandboxes(struct server *srv, const char *ws, size_t *ret_in_ws)
{
	size_t n = 0, in_ws = 0, pos = 0;
	struct sandbox_rec *sb;
	while ((sb = map_next(&srv->sandboxes, &pos)))
		if (!sandbox_ended(sb)) {
			n++;
			in_ws += !strcmp(sb->row.workspace_id, ws);
		}
	*ret_in_ws = in_ws;
	return n;
}

/* Memory holds at most SERVER_MAX_SANDBOXES: past that, the oldest ended sandbox nobody waits on
 * leaves memory (its row stays in the store). */
static void sandboxes_evict(struct server *srv)
{
	while (srv->sandboxes.len >= SERVER_MAX_SANDBOXES) {
		struct sandbox_rec *oldest = NULL, *sb;
		size_t pos = 0;
		while ((sb = map_next(&srv->sandboxes, &pos)))
			if (sandbox_ended(sb) && !sb->waiters && !sb->patch_call &&
			    (!oldest || strcmp(sb->row.id, oldest->row.id) < 0))
				oldest = sb;
		if (!oldest)
			return;
		size_t epos = 0;
		struct exec_rec *ex;
		while ((ex = map_next(&oldest->execs, &epos)))
			if (ex->waiters)
				return; /* try again at the next create */
		map_remove(&srv->sandboxes, oldest->row.id);
		sandbox_rec_free(oldest);
	}
}

/* The image a create names: busybox (NULL) or a ready image of the workspace (*ret), whose
 * config gives the defaults: its env under the body's (the body's names win), its workdir
 * unless the body has one, and its entrypoint before the body's command when it has one (as
 * Docker puts ENTRYPOINT before CMD); an empty command stands for the image's cmd (Docker's
 * CMD, from an OCI image). 0, or -1 after a reply. */
static int image_defaults(struct api_call *call, json_t *body, struct image_rec **ret)
{
	*ret = NULL;
	static const char *const SERVER_ONLY[] = {"image_digest", "capture_layer"};
	for (size_t i = 0; i < ARRAY_SIZE(SERVER_ONLY); i++)
		if (json_object_get(body, SERVER_ONLY[i])) {
			api_reply_error(call, 400, "invalid_argument",
			                "%s: set by the server only; name an image instead",
			                SERVER_ONLY[i]);
			return -1;
		}
	json_t *image = json_object_get(body, "image");
	if (!image || json_is_null(image))
		return 0;
	const char *name = json_string_value(image);
	if (!name) {
		api_reply_error(call, 400, "invalid_argument",
		                "image: expected busybox or an image's id or name");
		return -1;
	}
	if (!strcmp(name, "busybox"))
		return 0;
	struct image_rec *im = image_lookup(call->srv, call->who.workspace_id, name);
	if (!im) {
		api_reply_error(call, 400, "invalid_argument",
		                "image: %.140s is not an image of this workspace (busybox, or an "
		                "image's id or name%s)",
		                name,
		                !strcmp(name, "debian-slim") || !strcmp(name, "debian:bookworm")
		                    ? "; a base is built first: skiff image build --from NAME"
		                    : "");
		return -1;
	}
	if (strcmp(im->row.state, "ready")) {
		api_reply_error(call, 400, "invalid_argument",
		                "image %s is %s: only a ready image can be started", im->row.id,
		                im->row.state);
		return -1;
	}
	json_t *env = json_deep_copy(json_object_get(im->config, "env"));
	json_t *given = json_object_get(body, "env");
	if (!env)
		env = json_object();
	if (json_is_object(given))
		json_object_update(env, given);
	if (!given || json_is_null(given) || json_is_object(given))
		json_object_set_new(body, "env", env); /* anything else: the spec says why */
	else
		json_decref(env);
	json_t *workdir = json_object_get(body, "workdir");
	if (!workdir || json_is_null(workdir))
		json_object_set(body, "workdir", json_object_get(im->config, "workdir"));
	/* A create without a command asks for an idle sandbox to exec into: the entrypoint
	 * applies to a command given ([] runs it alone), never in place of idling. */
	json_t *ep = json_object_get(im->config, "entrypoint");
	json_t *args = json_object_get(im->config, "cmd");
	json_t *cmd = json_object_get(body, "command");
	if (json_is_array(cmd) && (json_array_size(ep) || json_array_size(args))) {
		json_t *full = json_is_array(ep) ? json_deep_copy(ep) : json_array();
		json_array_extend(full, json_array_size(cmd) || !json_is_array(args) ? cmd : args);
		json_object_set_new(body, "command", full);
	}
	*ret = im;
	return 0;
}

static void create_go(struct api_call *call, json_t *body)
{
	struct server *srv = call->srv;
	struct sk_error err = {0};
	struct spec spec;
	spec_init(&spec);

	json_t *tags = json_object_get(body, "tags");
	if (tags && !json_is_null(tags) && !tags_valid(tags, call))
		goto out;
	if (json_object_get(body, "rootfs")) {
		api_reply_error(call, 400, "invalid_argument",
		                "unknown field \"rootfs\": name an image instead");
		goto out;
	}
	double idle = 0;
	json_t *idle_v = json_object_get(body, "idle_timeout_s");
	if (idle_v && !json_is_null(idle_v) && !seconds_valid(idle_v, &idle)) {
		api_reply_error(
		    call, 400, "invalid_argument",
		    "idle_timeout_s: expected seconds, more than 0 and up to %.0f, or null",
		    SPEC_MAX_TIMEOUT_S);
		goto out;
	}
	json_object_del(body, "idle_timeout_s"); /* checked here: the runtime's spec has none */
	struct image_rec *im = NULL;
	if (image_defaults(call, body, &im) < 0)
		goto out;
	char *text = json_dumps(body, JSON_COMPACT);
	int r = text ? spec_apply_json(&spec, text, strlen(text), &err) : -ENOMEM;
	free(text);
	if (r >= 0)
		r = spec_validate(&spec, &err);
	if (r < 0) {
		if (!err.msg[0])
			sk_error_set(&err, -ENOMEM, "out of memory");
		api_reply_sk_error(call, &err);
		goto out;
	}
	const char *name = spec.name ? spec.name : "";
	size_t pos = 0;
	struct sandbox_rec *other;
	if (name[0])
		while ((other = map_next(&srv->sandboxes, &pos)))
			if (!sandbox_ended(other) && !strcmp(other->row.name, name) &&
			    !strcmp(other->row.workspace_id, call->who.workspace_id)) {
				api_reply_error(call, 409, "conflict",
				                "a sandbox named %s is already %s (%s)", name,
				                other->row.state, other->row.id);
				goto out;
			}
	size_t in_ws, live = live_sandboxes(srv, call->who.workspace_id, &in_ws);
	if (live >= SERVER_MAX_LIVE_SANDBOXES || in_ws >= SERVER_MAX_LIVE_PER_WORKSPACE) {
		api_reply_error(
		    call, 429, "resource_exhausted",
		    "too many running sandboxes (%zu in this workspace, at most %d; %zu in "
		    "all, at most %d): delete some first",
		    in_ws, SERVER_MAX_LIVE_PER_WORKSPACE, live, SERVER_MAX_LIVE_SANDBOXES);
		goto out;
	}
	sandboxes_evict(srv);
	if (srv->sandboxes.len >= SERVER_MAX_SANDBOXES) {
		api_reply_error(call, 429, "resource_exhausted", "too many sandboxes kept");
		goto out;
	}
	struct worker_rec *w = link_pick_worker(srv);
	if (!w) {
		api_reply_error(call, 503, "unavailable",
		                "no worker is connected to run the sandbox; try again shortly");
		goto out;
	}

	struct sandbox_rec *sb = calloc(1, sizeof(*sb));
	if (!sb || id_new("sb-", sb->row.id, sizeof(sb->row.id)) < 0) {
		free(sb);
		api_reply_error(call, 503, "unavailable", "out of memory");
		goto out;
	}
	map_init(&sb->execs);
	snprintf(sb->row.workspace_id, sizeof(sb->row.workspace_id), "%s", call->who.workspace_id);
	snprintf(sb->row.name, sizeof(sb->row.name), "%s", name);
	snprintf(sb->row.state, sizeof(sb->row.state), "pending");
	snprintf(sb->row.worker_id, sizeof(sb->row.worker_id), "%s", w->row.id);
	sb->row.exit_code = -1;
	sb->row.created_ms = clock_now_ms();
	sb->worker = w;
	/* The spec as accepted, with every default filled in. */
	json_t *command = json_object_get(body, "command");
	json_t *env = json_object_get(body, "env");
	json_t *env_v = env && !json_is_null(env) ? json_incref(env) : json_object();
	sb->spec =
	    json_pack("{s:s, s:O, s:o, s:s, s:f, s:I, s:I, s:I, s:f, s:o, s:s}", "image",
	              im ? im->row.id : "busybox", "command", command ? command : json_null(),
	              "env", env_v, "workdir", spec.workdir ? spec.workdir : "/", "cpu", spec.cpu,
	              "memory_mib", (json_int_t)spec.memory_mib, "disk_mib",
	              (json_int_t)spec.disk_mib, "pids", (json_int_t)spec.pids, "timeout_s",
	              spec.timeout_s, "idle_timeout_s", idle > 0 ? json_real(idle) : json_null(),
	              "network", spec.network == SPEC_NET_EGRESS ? "egress" : "none");
	json_t *cidrs = json_array();
	for (size_t i = 0; cidrs && i < spec.ncidrs; i++) {
		char c[SPEC_CIDR_MAX_CHARS + 1];
		spec_cidr_format(&spec.cidrs[i], c, sizeof(c));
		json_array_append_new(cidrs, json_string(c));
	}
	if (sb->spec && cidrs)
		json_object_set_new(sb->spec, "cidr_allowlist", cidrs);
	else
		json_decref(cidrs);
	if (sb->spec && spec.hostname)
		json_object_set_new(sb->spec, "hostname", json_string(spec.hostname));
	if (sb->spec && im) { /* the worker starts it on the image's manifest */
		json_object_set_new(sb->spec, "image_digest", json_string(im->row.manifest));
		snprintf(sb->row.image_id, sizeof(sb->row.image_id), "%s", im->row.id);
	}
	json_t *ports = json_array();
	for (size_t i = 0; ports && i < spec.nports; i++)
		json_array_append_new(ports, json_integer(spec.ports[i]));
	if (sb->spec && ports)
		json_object_set_new(sb->spec, "ports", ports);
	else
		json_decref(ports);
	sb->tags = tags && !json_is_null(tags) ? json_copy(tags) : json_object();
	if (!sb->spec || !sb->tags || map_put(&srv->sandboxes, sb->row.id, sb) < 0) {
		sandbox_rec_free(sb);
		api_reply_error(call, 503, "unavailable", "out of memory");
		goto out;
	}
	server_logf(srv, "level=info msg=\"sandbox create\" sandbox=%s workspace=%s worker=%s",
	            sb->row.id, sb->row.workspace_id, w->row.id);
	waiter_add(srv, &sb->waiters, call, WAIT_CREATE, sb, SERVER_CREATE_TIMEOUT_MS / 1000.0);
	/* A pending sandbox is not stored: it becomes durable when it runs, and the 201 follows
	 * that commit (one commit per create). A crash before it leaves at most a sandbox the
	 * worker runs and the server does not know, which the worker's next registration removes.
	 */
	sandbox_create_command(srv, sb);
out:
	spec_release(&spec);
	json_decref(body);
}

struct idem_lookup {
	struct api_call *call;
	json_t *body;
	struct store_idem found;
	int rc;
};

static int idem_lookup_fn(struct store_tx *tx, void *ud)
{
	struct idem_lookup *l = ud;
	l->rc = store_idem_get(tx, l->call->who.workspace_id, l->call->idem_key, clock_now_ms(),
	                       &l->found);
	return 0;
}

static void idem_lookup_done(void *ud, int rc)
{
	struct idem_lookup *l = ud;
	struct api_call *call = l->call;
	if (rc < 0 || (l->rc < 0 && l->rc != -ENOENT)) {
		api_reply_error(call, 503, "unavailable", "the state store failed");
		json_decref(l->body);
	} else if (l->rc == 0 && strcmp(l->found.body_hash, call->idem_hash)) {
		api_reply_error(call, 409, "conflict",
		                "Idempotency-Key %.64s was used with a different body",
		                call->idem_key);
		json_decref(l->body);
	} else if (l->rc == 0) {
		json_t *prev = json_loads(l->found.response ? l->found.response : "", 0, NULL);
		if (prev)
			api_reply_json(call, l->found.status, prev);
		else
			api_reply_error(call, 500, "internal", "the stored reply is unreadable");
		json_decref(l->body);
	} else {
		create_go(call, l->body);
	}
	store_idem_release(&l->found);
	free(l);
}

void api_sandboxes_create(struct http_request *req)
{
	struct api_call *call = req->data;
	json_t *body = api_body_object(call);
	if (!body)
		return;
	const char *key = http_header_get(req, "Idempotency-Key");
	if (!key) {
		create_go(call, body);
		return;
	}
	size_t klen = strlen(key);
	int printable = klen > 0 && klen < STORE_IDEM_KEY_BYTES;
	for (size_t i = 0; printable && i < klen; i++)
		printable = key[i] > ' ' && key[i] < 127;
	if (!printable) {
		json_decref(body);
		api_reply_error(call, 400, "invalid_argument",
		                "Idempotency-Key: 1-%d printable characters",
		                STORE_IDEM_KEY_BYTES - 1);
		return;
	}
	snprintf(call->idem_key, sizeof(call->idem_key), "%s", key);
	sha256_hex(req->body, req->body_len, call->idem_hash);
	char inflight[sizeof(call->inflight_key)];
	snprintf(inflight, sizeof(inflight), "%s/%s", call->who.workspace_id, key);
	if (map_get(&call->srv->idem_inflight, inflight)) {
		json_decref(body);
		api_reply_error(call, 409, "conflict",
		                "a request with Idempotency-Key %.64s is in progress", key);
		return;
	}
	char *k = strdup(inflight);
	struct idem_lookup *l = calloc(1, sizeof(*l));
	if (!k || !l || map_put(&call->srv->idem_inflight, k, k) < 0) {
		free(k);
		free(l);
		json_decref(body);
		api_reply_error(call, 503, "unavailable", "out of memory");
		return;
	}
	snprintf(call->inflight_key, sizeof(call->inflight_key), "%s", inflight);
	l->call = call;
	l->body = body;
	if (server_persist(call->srv, idem_lookup_fn, idem_lookup_done, l) < 0) {
		free(l);
		json_decref(body);
		api_reply_error(call, 503, "unavailable", "the state store is unavailable");
	}
}

/* List. */
static const char *sandbox_id(const void *sb)
{
	return ((const struct sandbox_rec *)sb)->row.id;
}

static json_t *sandbox_item(const void *sb)
{
	return sandbox_json(sb);
}

void api_sandboxes_list(struct http_request *req)
{
	struct api_call *call = req->data;
	struct server *srv = call->srv;
	size_t limit;
	char cursor[ID_MAX_BYTES + 1], state[STORE_STATE_BYTES + 1], name[STORE_NAME_BYTES + 1];
	char ws[ID_MAX_BYTES + STORE_NAME_BYTES];
	char tagk[MAX_TAG_FILTERS][SPEC_MAX_TAG_BYTES * 2 + 2];
	unsigned ntags = 0;
	if (api_list_params(call, &limit, cursor, sizeof(cursor)) < 0)
		return;
	int has_state = http_query_get(req, "state", 0, state, sizeof(state));
	int has_name = http_query_get(req, "name", 0, name, sizeof(name));
	int has_ws = http_query_get(req, "workspace", 0, ws, sizeof(ws));
	if ((has_state < 0 && has_state != -ENOENT) || (has_name < 0 && has_name != -ENOENT) ||
	    (has_ws < 0 && has_ws != -ENOENT)) {
		api_reply_error(call, 400, "invalid_argument", "state, name, workspace: bad value");
		return;
	}
	for (;; ntags++) {
		int r = http_query_get(req, "tag", ntags, tagk[ntags % MAX_TAG_FILTERS],
		                       sizeof(tagk[0]));
		if (r == -ENOENT)
			break;
		if (r < 0 || ntags >= MAX_TAG_FILTERS || !strchr(tagk[ntags], ':')) {
			api_reply_error(call, 400, "invalid_argument",
			                "tag: expected up to %d filters of the form key:value",
			                MAX_TAG_FILTERS);
			return;
		}
	}
	const char *ws_id = NULL;
	if (has_ws >= 0) {
		struct workspace_rec *w = api_workspace_find(srv, ws);
		if (!w || !api_can_see(call, w->row.id)) {
			api_reply_error(call, 404, "not_found", "workspace %.64s not found", ws);
			return;
		}
		ws_id = w->row.id;
	}

	const void **all = malloc(sizeof(*all) * (srv->sandboxes.len + 1));
	if (!all) {
		api_reply_error(call, 503, "unavailable", "out of memory");
		return;
	}
	size_t n = 0, pos = 0;
	struct sandbox_rec *sb;
	while ((sb = map_next(&srv->sandboxes, &pos))) {
		if (!api_can_see(call, sb->row.workspace_id) ||
		    (ws_id && strcmp(ws_id, sb->row.workspace_id)) ||
		    (has_state >= 0 && strcmp(state, sb->row.state)) ||
		    (has_name >= 0 && strcmp(name, sb->row.name)) ||
		    (cursor[0] && strcmp(sb->row.id, cursor) <= 0))
			continue;
		int ok = 1;
		for (unsigned i = 0; ok && i < ntags; i++) {
			char *colon = strchr(tagk[i], ':');
			*colon = '\0';
			json_t *v = json_object_get(sb->tags, tagk[i]);
			ok = v && !strcmp(json_string_value(v), colon + 1);
			*colon = ':';
		}
		if (ok)
			all[n++] = sb;
	}
	api_reply_page(call, all, n, limit, sandbox_id, sandbox_item);
	free(all);
}

void api_sandboxes_get(struct http_request *req)
{
	struct api_call *call = req->data;
	struct sandbox_rec *sb = api_sandbox_of_call(call);
	if (sb)
		api_reply_json(call, 200, sandbox_json(sb));
}

static void patch_done(struct server *srv, struct sandbox_rec *sb, int rc)
{
	(void)srv;
	struct api_call *call = sb->patch_call;
	sb->patch_call = NULL;
	if (rc < 0)
		api_reply_error(call, 503, "unavailable", "the state store failed");
	else
		api_reply_json(call, 200, sandbox_json(sb));
}

void api_sandboxes_patch(struct http_request *req)
{
	struct api_call *call = req->data;
	struct sandbox_rec *sb = api_sandbox_of_call(call);
	if (!sb)
		return;
	json_t *body = api_body_object(call);
	if (!body)
		return;
	const char *key;
	json_t *v;
	json_object_foreach (body, key, v) {
		if (strcmp(key, "tags") && strcmp(key, "timeout_s")) {
			api_reply_error(
			    call, 400, "invalid_argument",
			    "unknown field \"%.64s\": only tags and timeout_s can change", key);
			json_decref(body);
			return;
		}
	}
	json_t *tags = json_object_get(body, "tags");
	json_t *timeout = json_object_get(body, "timeout_s");
	if (tags && !tags_valid(tags, call)) {
		json_decref(body);
		return;
	}
	double t = 0;
	if (timeout) {
		double old = json_number_value(json_object_get(sb->spec, "timeout_s"));
		if (!seconds_valid(timeout, &t)) {
			api_reply_error(call, 400, "invalid_argument",
			                "timeout_s: expected a number of seconds up to %.0f",
			                SPEC_MAX_TIMEOUT_S);
			json_decref(body);
			return;
		}
		if (old <= 0) {
			api_reply_error(
			    call, 400, "invalid_argument",
			    "timeout_s: the sandbox has no timeout; it can't be shortened");
			json_decref(body);
			return;
		}
		if (t < old) {
			api_reply_error(call, 400, "invalid_argument",
			                "timeout_s: can only be extended (now %g)", old);
			json_decref(body);
			return;
		}
		if (sandbox_ended(sb) || sb->timeout_end_ms) {
			api_reply_error(call, 409, "conflict", "sandbox %s has %s", sb->row.id,
			                sandbox_ended(sb) ? "ended" : "timed out");
			json_decref(body);
			return;
		}
	}
	if (sb->patch_call) {
		api_reply_error(call, 409, "conflict", "another change of %s is in progress",
		                sb->row.id);
		json_decref(body);
		return;
	}
	if (tags) {
		json_decref(sb->tags);
		sb->tags = json_copy(tags);
	}
	if (timeout) {
		json_object_set_new(sb->spec, "timeout_s", json_real(t));
		if (sb->row.started_ms)
			sb->row.deadline_ms = sb->row.started_ms + (int64_t)(t * 1000);
		sandbox_timeouts_update(call->srv, sb);
		json_t *cmd = json_pack("{s:s, s:f}", "sandbox", sb->row.id, "timeout_s", t);
		if (sb->worker && cmd)
			link_command(call->srv, sb->worker, "timeout", cmd);
		else
			json_decref(cmd);
	}
	json_decref(body);
	sb->patch_call = call;
	if (sandbox_persist(call->srv, sb, patch_done) < 0) {
		sb->patch_call = NULL;
		api_reply_error(call, 503, "unavailable", "the state store failed");
	}
}

static int wait_timeout_param(struct api_call *call, double *ret)
{
	char buf[32];
	*ret = DEFAULT_WAIT_S;
	int r = http_query_get(call->req, "timeout_s", 0, buf, sizeof(buf));
	if (r == -ENOENT)
		return 0;
	char *end;
	double v = r >= 0 ? strtod(buf, &end) : -1;
	if (r < 0 || !buf[0] || *end || !isfinite(v) || v < 0 || v > SERVER_MAX_WAIT_S) {
		api_reply_error(call, 400, "invalid_argument",
		                "timeout_s: expected seconds from 0 to %.0f", SERVER_MAX_WAIT_S);
		return -1;
	}
	*ret = v;
	return 0;
}

void api_sandboxes_wait(struct http_request *req)
{
	struct api_call *call = req->data;
	struct sandbox_rec *sb = api_sandbox_of_call(call);
	double timeout;
	if (!sb || wait_timeout_param(call, &timeout) < 0)
		return;
	if (sandbox_ended(sb) || timeout == 0) {
		api_reply_json(call, 200, sandbox_json(sb));
		return;
	}
	waiter_add(call->srv, &sb->waiters, call, WAIT_ENDED, sb, timeout);
}

void api_sandboxes_delete(struct http_request *req)
{
	struct api_call *call = req->data;
	struct server *srv = call->srv;
	struct sandbox_rec *sb = api_sandbox_of_call(call);
	if (!sb)
		return;
	if (sandbox_ended(sb)) {
		if (sb->worker && sb->worker->connected && !sb->removed) {
			json_t *cmd = json_pack("{s:s}", "sandbox", sb->row.id);
			if (cmd && link_command(srv, sb->worker, "remove", cmd) == 0)
				sb->removed = 1;
		}
		api_reply_json(call, 200, sandbox_json(sb));
		return;
	}

	if (!sb->worker || !sb->worker->connected) {
		/* Nobody runs it now: the worker, when it comes back, is told to remove it. */
		sandbox_set_ended(srv, sb, "terminated", 137, 0);
		waiter_add(srv, &sb->waiters, call, WAIT_TERMINATE, sb, TERMINATE_EXTRA_S);
		return;
	}
	if (!sb->terminating) {
		json_t *cmd =
		    json_pack("{s:s, s:i}", "sandbox", sb->row.id, "grace_ms", TERMINATE_GRACE_MS);
		if (!cmd || link_command(srv, sb->worker, "terminate", cmd) < 0) {
			api_reply_error(call, 503, "unavailable", "the worker can't take commands");
			return;
		}
		sb->terminating = 1;
		sb->removed = 1; /* the worker removes it once terminated */
	}
	waiter_add(srv, &sb->waiters, call, WAIT_TERMINATE, sb,
	           TERMINATE_GRACE_MS / 1000.0 + TERMINATE_EXTRA_S);
}

/* Exec. */
static int string_array_valid(json_t *a, size_t max_items, size_t *bytes)
{
	if (!json_is_array(a) || json_array_size(a) == 0 || json_array_size(a) > max_items)
		return 0;
	size_t i;
	json_t *v;
	json_array_foreach (a, i, v) {
		if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
			return 0;
		*bytes += json_string_length(v) + 1;
	}
	return 1;
}

int pty_size_valid(json_t *o)
{
	static const char *const KEYS[] = {"rows", "cols"};
	if (!json_is_object(o) || json_object_size(o) != 2)
		return 0;
	for (size_t i = 0; i < ARRAY_SIZE(KEYS); i++) {
		json_t *v = json_object_get(o, KEYS[i]);
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > EXEC_PTY_MAX_SIZE)
			return 0;
	}
	return 1;
}

/* Queue a new exec for its sandbox's worker. */
static void exec_command(struct server *srv, struct exec_rec *ex)
{
	struct sandbox_rec *sb = ex->sb;
	json_t *cmd = ex->row.command_json ? json_loads(ex->row.command_json, 0, NULL) : NULL;
	if (cmd) {
		/* An exec sees the sandbox's environment, then its own on top. */
		json_t *env = json_deep_copy(json_object_get(sb->spec, "env"));
		json_t *own = json_object_get(cmd, "env");
		if (env && json_is_object(own))
			json_object_update(env, own);
		json_object_set_new(cmd, "env", env ? env : json_object());
		/* And starts where the sandbox's command did (its image's workdir, or the one its
		 * create gave) unless it names its own, as `docker exec` does. */
		json_t *wd = json_object_get(cmd, "workdir");
		if ((!wd || json_is_null(wd)) &&
		    json_is_string(json_object_get(sb->spec, "workdir")))
			json_object_set(cmd, "workdir", json_object_get(sb->spec, "workdir"));
		json_object_set_new(cmd, "sandbox", json_string(sb->row.id));
		json_object_set_new(cmd, "exec", json_string(ex->row.id));
		json_object_set_new(cmd, "capture", json_boolean(ex->capture));
	}
	if (!cmd || !sb->worker || link_command(srv, sb->worker, "exec", cmd) < 0)
		exec_set_ended(srv, ex, "failed", -1, 0, NULL);
}

void api_sandboxes_exec(struct http_request *req)
{
	struct api_call *call = req->data;
	struct server *srv = call->srv;
	struct sandbox_rec *sb = api_sandbox_of_call(call);
	if (!sb)
		return;
	char buf[16];
	int wait = 0;
	int r = http_query_get(req, "wait", 0, buf, sizeof(buf));
	if (r >= 0 && (!strcmp(buf, "true") || !strcmp(buf, "1")))
		wait = 1;
	else if (r >= 0 && strcmp(buf, "false") && strcmp(buf, "0")) {
		api_reply_error(call, 400, "invalid_argument", "wait: expected true or false");
		return;
	} else if (r < 0 && r != -ENOENT) {
		api_reply_error(call, 400, "invalid_argument", "wait: bad value");
		return;
	}
	json_t *body = api_body_object(call);
	if (!body)
		return;
	const char *key;
	json_t *v;
	size_t bytes = 0;
	double timeout = 0;
	json_object_foreach (body, key, v) {
		if (!strcmp(key, "command")) {
			if (!string_array_valid(v, SPEC_MAX_ARGS, &bytes))
				goto bad_command;
		} else if (!strcmp(key, "env")) {
			if (json_is_null(v))
				continue;
			const char *ek;
			json_t *ev;
			if (!json_is_object(v) || json_object_size(v) > SPEC_MAX_ENV)
				goto bad_env;
			json_object_foreach (v, ek, ev) {
				if (!ek[0] || strchr(ek, '=') || !json_is_string(ev) ||
				    strlen(json_string_value(ev)) != json_string_length(ev))
					goto bad_env;
				bytes += strlen(ek) + json_string_length(ev) + 2;
			}
		} else if (!strcmp(key, "workdir")) {
			if (json_is_null(v))
				continue;
			if (!json_is_string(v) || json_string_value(v)[0] != '/' ||
			    json_string_length(v) >= SPEC_MAX_PATH_BYTES ||
			    strlen(json_string_value(v)) != json_string_length(v)) {
				api_reply_error(call, 400, "invalid_argument",
				                "workdir: expected an absolute path");
				goto out;
			}
		} else if (!strcmp(key, "timeout_s")) {
			if (json_is_null(v))
				continue;
			if (!seconds_valid(v, &timeout)) {
				api_reply_error(call, 400, "invalid_argument",
				                "timeout_s: expected seconds up to %.0f",
				                SPEC_MAX_TIMEOUT_S);
				goto out;
			}
		} else if (!strcmp(key, "stdin") || !strcmp(key, "pty")) {
			if (json_is_null(v) || json_is_boolean(v))
				continue;
			api_reply_error(call, 400, "invalid_argument", "%s: expected a boolean",
			                key);
			goto out;
		} else if (!strcmp(key, "pty_size")) {
			if (json_is_null(v))
				continue;
			if (!pty_size_valid(v) || !json_is_true(json_object_get(body, "pty"))) {
				api_reply_error(call, 400, "invalid_argument",
				                "pty_size: {\"rows\", \"cols\"} from 1 to %d, with "
				                "\"pty\": true",
				                EXEC_PTY_MAX_SIZE);
				goto out;
			}
		} else {
			api_reply_error(call, 400, "invalid_argument", "unknown field \"%.64s\"",
			                key);
			goto out;
		}
	}
	if (!json_object_get(body, "command"))
		goto bad_command;
	if (bytes > SPEC_MAX_STRINGS_BYTES) {
		api_reply_error(call, 400, "invalid_argument",
		                "command and env: more than %d bytes together",
		                SPEC_MAX_STRINGS_BYTES);
		goto out;
	}
	if (strcmp(sb->row.state, "running") || sb->timeout_end_ms) {
		api_reply_error(call, 409, "conflict", "sandbox %s is %s, not running", sb->row.id,
		                sb->timeout_end_ms ? "timing out" : sb->row.state);
		goto out;
	}
	if (sb->execs.len >= SERVER_MAX_EXECS_PER_SANDBOX) {
		api_reply_error(call, 429, "resource_exhausted", "sandbox %s has had %d execs",
		                sb->row.id, SERVER_MAX_EXECS_PER_SANDBOX);
		goto out;
	}

	struct exec_rec *ex = calloc(1, sizeof(*ex));
	if (!ex || id_new("ex-", ex->row.id, sizeof(ex->row.id)) < 0) {
		free(ex);
		api_reply_error(call, 503, "unavailable", "out of memory");
		goto out;
	}
	ex->sb = sb;
	ex->capture = wait;
	snprintf(ex->row.sandbox_id, sizeof(ex->row.sandbox_id), "%s", sb->row.id);
	snprintf(ex->row.workspace_id, sizeof(ex->row.workspace_id), "%s", sb->row.workspace_id);
	snprintf(ex->row.state, sizeof(ex->row.state), "pending");
	ex->row.exit_code = -1;
	ex->row.created_ms = clock_now_ms();
	ex->row.command_json = json_dumps(body, JSON_COMPACT);
	if (!ex->row.command_json || map_put(&sb->execs, ex->row.id, ex) < 0) {
		store_exec_release(&ex->row);
		free(ex);
		api_reply_error(call, 503, "unavailable", "out of memory");
		goto out;
	}
	sb->execs_live++; /* not idle until it ends */
	sandbox_touch(srv, sb);
	double hold = wait ? (timeout > 0 ? timeout + 30 : SERVER_MAX_WAIT_S)
	                   : SERVER_EXEC_START_TIMEOUT_MS / 1000.0;
	waiter_add(srv, &ex->waiters, call, wait ? WAIT_EXEC_ENDED : WAIT_EXEC_STARTED, ex, hold);
	/* Like a create: an exec is stored once it has started (or ended), not while pending. */
	exec_command(srv, ex);
	json_decref(body);
	return;

bad_command:
	api_reply_error(call, 400, "invalid_argument",
	                "command: expected a non-empty array of up to %d strings", SPEC_MAX_ARGS);
	goto out;
bad_env:
	api_reply_error(call, 400, "invalid_argument",
	                "env: expected an object of strings with names without '='");
out:
	json_decref(body);
}

struct exec_rec *exec_of_call(struct api_call *call)
{
	struct sandbox_rec *sb = api_sandbox_of_call(call);
	if (!sb)
		return NULL;
	struct exec_rec *ex = map_get(&sb->execs, call->req->params[1]);
	if (!ex)
		api_reply_error(call, 404, "not_found", "exec %.64s not found in %s",
		                call->req->params[1], sb->row.id);
	return ex;
}

void api_execs_get(struct http_request *req)
{
	struct api_call *call = req->data;
	struct exec_rec *ex = exec_of_call(call);
	if (!ex)
		return;
	json_t *o = exec_json(ex);
	/* Output lives with the exec's output route (not here). */
	json_object_del(o, "stdout");
	json_object_del(o, "stderr");
	json_object_del(o, "stdout_b64");
	json_object_del(o, "stderr_b64");
	json_object_del(o, "truncated");
	api_reply_json(call, 200, o);
}
