/* What every skiff command shares: where the server is and the token (options, environment,
 * config file), blocking HTTP requests with libcurl, option parsing, and output. */
#include "cli.h"

#include <curl/curl.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void cli_release(struct cli *c)
{
	if (c->token)
		explicit_bzero(c->token, strlen(c->token));
	free(c->token);
	free(c->url);
	if (c->curl)
		curl_easy_cleanup(c->curl);
	c->token = c->url = NULL;
	c->curl = NULL;
}

/* ---- configuration ---- */

int cli_config_path(char **ret_dir, char **ret_path, struct sk_error *err)
{
	const char *base = getenv("XDG_CONFIG_HOME");
	_cleanup_free_ char *dir = NULL;
	/* The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored. */
	if (base && base[0] == '/') {
		if (asprintf(&dir, "%s/skiff", base) < 0)
			return sk_error_errno(err, -ENOMEM, "config path");
	} else {
		const char *home = getenv("HOME");
		if (!home || home[0] != '/') {
			struct passwd *pw = getpwuid(getuid());
			home = pw ? pw->pw_dir : NULL;
		}
		if (!home || home[0] != '/')
			return sk_error_set(err, -ENOENT,
			                    "cannot find the config directory: set HOME or "
			                    "XDG_CONFIG_HOME");
		if (asprintf(&dir, "%s/.config/skiff", home) < 0)
			return sk_error_errno(err, -ENOMEM, "config path");
	}
	char *path = NULL;
	if (asprintf(&path, "%s/config.json", dir) < 0)
		return sk_error_errno(err, -ENOMEM, "config path");
	if (ret_dir)
		*ret_dir = TAKE_PTR(dir);
	*ret_path = path;
	return 0;
}

/* Load the config file into *ret (NULL when there is none). */
static int cli_config_load(json_t **ret, struct sk_error *err)
{
	_cleanup_free_ char *path = NULL;
	int r = cli_config_path(NULL, &path, err);
	if (r < 0)
		return r;
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	if (!f) {
		if (errno == ENOENT) {
			*ret = NULL;
			return 0;
		}
		return sk_error_errno(err, -errno, "open %s", path);
	}
	struct stat st;
	if (fstat(fileno(f), &st) < 0)
		return sk_error_errno(err, -errno, "stat %s", path);
	if (!S_ISREG(st.st_mode) || st.st_size > (off_t)CLI_MAX_CONFIG_BYTES)
		return sk_error_set(err, -EINVAL, "%s: not a regular file of at most %u bytes",
		                    path, CLI_MAX_CONFIG_BYTES);
	json_error_t jerr;
	json_t *cfg = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
	/* jerr.text may quote the file, which holds the token: report only the position. */
	if (!cfg || !json_is_object(cfg)) {
		json_decref(cfg);
		return sk_error_set(err, -EINVAL,
		                    "%s: not a JSON object (line %d); run skiff login", path,
		                    jerr.line);
	}
	*ret = cfg;
	return 0;
}

int cli_url_normalize(const char *url, char **ret, struct sk_error *err)
{
	size_t len = strnlen(url, CLI_MAX_URL_BYTES);
	if (len >= CLI_MAX_URL_BYTES)
		return sk_error_set(err, -SK_EINVAL_SPEC, "URL longer than %d bytes",
		                    CLI_MAX_URL_BYTES);
	if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "URL '%s' must start with http:// or https://", url);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)url[i] <= ' ' || url[i] == 0x7f)
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "URL contains a space or control character");
	while (len > 0 && url[len - 1] == '/')
		len--;
	char *copy = strndup(url, len);
	if (!copy)
		return sk_error_errno(err, -ENOMEM, "URL");
	*ret = copy;
	return 0;
}

int cli_token_check(const char *token, struct sk_error *err)
{
	size_t len = strnlen(token, CLI_MAX_TOKEN_BYTES + 1);
	if (len == 0)
		return sk_error_set(err, -SK_EINVAL_SPEC, "the token is empty");
	if (len > CLI_MAX_TOKEN_BYTES)
		return sk_error_set(err, -SK_EINVAL_SPEC, "the token is longer than %d bytes",
		                    CLI_MAX_TOKEN_BYTES);
	/* It goes into a header line: no spaces, control characters or non-ASCII bytes. */
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)token[i] <= ' ' || (unsigned char)token[i] >= 0x7f)
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "the token contains a space, control character or "
			                    "non-ASCII byte");
	return 0;
}

static const char *env_nonempty(const char *name)
{
	const char *v = getenv(name);
	return v && v[0] ? v : NULL;
}

/* The config file's URL (normalized) and token, either NULL when absent. */
static int cli_config_get(char **ret_url, char **ret_token, struct sk_error *err)
{
	_cleanup_json_ json_t *cfg = NULL;
	int r = cli_config_load(&cfg, err);
	if (r < 0)
		return r;
	const char *url = cli_json_str(cfg, "url");
	const char *token = cli_json_str(cfg, "token");
	_cleanup_free_ char *norm = NULL;
	if (url && cli_url_normalize(url, &norm, err) < 0)
		return sk_error_prefix(err, "config file");
	char *tok = token ? strdup(token) : NULL;
	if (token && !tok)
		return sk_error_errno(err, -ENOMEM, "config");
	*ret_url = TAKE_PTR(norm);
	*ret_token = tok;
	return 0;
}

static void token_freep(char **p)
{
	if (*p)
		explicit_bzero(*p, strlen(*p));
	free(*p);
}

int cli_url_resolve(struct cli *c, struct sk_error *err)
{
	if (c->url)
		return 0;
	const char *url = c->url_opt ? c->url_opt : env_nonempty("SKIFF_URL");
	if (url)
		return cli_url_normalize(url, &c->url, err);
	_cleanup_free_ char *cfg_url = NULL;
	_cleanup_(token_freep) char *cfg_token = NULL;
	int r = cli_config_get(&cfg_url, &cfg_token, err);
	if (r < 0)
		return r;
	if (cfg_url) {
		c->url = TAKE_PTR(cfg_url);
		return 0;
	}
	return cli_url_normalize(CLI_DEFAULT_URL, &c->url, err);
}

/* Resolve the URL and token: options > environment > config file > default URL. The config's token
 * goes only to the config's URL: pointing --url or SKIFF_URL elsewhere must not leak it. */
static int cli_resolve(struct cli *c, struct sk_error *err)
{
	int r = cli_url_resolve(c, err);
	if (r < 0 || c->token)
		return r;
	const char *token = c->token_opt ? c->token_opt : env_nonempty("SKIFF_TOKEN");
	_cleanup_free_ char *cfg_url = NULL;
	_cleanup_(token_freep) char *cfg_token = NULL;
	if (!token) {
		r = cli_config_get(&cfg_url, &cfg_token, err);
		if (r < 0)
			return r;
		if (cfg_token && cfg_url && strcmp(cfg_url, c->url) == 0)
			token = cfg_token;
	}
	if (!token)
		return sk_error_set(
		    err, -EACCES, "no token for %s: run 'skiff login --url %s' or set SKIFF_TOKEN",
		    c->url, c->url);
	r = cli_token_check(token, err);
	if (r < 0)
		return r;
	c->token = strdup(token);
	if (!c->token)
		return sk_error_errno(err, -ENOMEM, "token");
	return 0;
}

/* ---- HTTP ---- */

struct reply_buf {
	char *data;
	size_t len, cap;
	bool too_big;
	long long skiff_offset;      /* X-Skiff-Offset of an output read, -1 when absent */
	int skiff_eof;               /* X-Skiff-Eof: 1 true, 0 false, -1 absent */
	const struct cli_sink *sink; /* a 2xx reply's body goes there as it comes */
	void *curl;
	bool sink_stopped;
};

/* Output reads say where their bytes start and whether the writer has ended. */
static size_t reply_on_header(char *p, size_t size, size_t n, void *userdata)
{
	struct reply_buf *b = userdata;
	size_t len = size * n;
	static const char OFF[] = "x-skiff-offset:", EOFH[] = "x-skiff-eof:";
	if (len > sizeof(OFF) - 1 && !strncasecmp(p, OFF, sizeof(OFF) - 1)) {
		char num[32];
		size_t k = len - (sizeof(OFF) - 1) < sizeof(num) - 1 ? len - (sizeof(OFF) - 1)
		                                                     : sizeof(num) - 1;
		memcpy(num, p + sizeof(OFF) - 1, k);
		num[k] = '\0';
		b->skiff_offset = strtoll(num, NULL, 10);
	} else if (len > sizeof(EOFH) - 1 && !strncasecmp(p, EOFH, sizeof(EOFH) - 1)) {
		b->skiff_eof = memmem(p, len, "true", 4) != NULL;
	}
	return len;
}

static size_t reply_on_data(char *p, size_t size, size_t n, void *userdata)
{
	struct reply_buf *b = userdata;
	size_t add = size * n;
	long status = 0;
	if (b->sink && curl_easy_getinfo(b->curl, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
	    status >= 200 && status < 300) {
		if (b->sink->on_data(p, add, b->sink->ud) < 0) {
			b->sink_stopped = true;
			return 0;
		}
		return add;
	}
	if (add > CLI_MAX_RESPONSE_BYTES - b->len) {
		b->too_big = true;
		return 0;
	}
	if (b->len + add + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + add + 1)
			cap *= 2;
		char *d = realloc(b->data, cap);
		if (!d)
			return 0;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, add);
	b->len += add;
	b->data[b->len] = '\0';
	return add;
}

static volatile sig_atomic_t signals_caught;
static volatile sig_atomic_t last_signal;

static void on_signal(int sig)
{
	if (signals_caught < 1000)
		signals_caught++;
	last_signal = sig;
}

void cli_signals_install(void)
{
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

int cli_signal_caught(void)
{
	return last_signal;
}

int cli_signal_count(void)
{
	return signals_caught;
}

/* libcurl calls this about once a second and on every transfer step: a nonzero return ends the
 * request, which is how a signal stops a blocking call. */
static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
	(void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
	const struct cli *c = userdata;
	return c->abort_after_signals > 0 && signals_caught >= c->abort_after_signals;
}

/* True when url's host is the loopback: there a proxy from the environment can only be wrong. */
static bool url_is_loopback(const char *url)
{
	const char *h = strstr(url, "://");
	h = h ? h + 3 : url;
	size_t n = h[0] == '[' ? strcspn(h, "]") + 1 : strcspn(h, ":/");
	return (n == 9 && strncasecmp(h, "localhost", 9) == 0) || strncmp(h, "127.", 4) == 0 ||
	       (n == 5 && strncmp(h, "[::1]", 5) == 0);
}

/* The server's message from an error reply, or a description of the status. */
static int reply_error(long status, const json_t *reply, struct sk_error *err)
{
	const json_t *e = json_object_get(reply, "error");
	const char *msg = cli_json_str(e, "message");
	const char *code = cli_json_str(e, "code");
	if (msg && msg[0])
		return sk_error_set(err, -EREMOTEIO, "%s", msg);
	if (code)
		return sk_error_set(err, -EREMOTEIO, "server error %ld: %s", status, code);
	return sk_error_set(err, -EREMOTEIO, "server replied with HTTP status %ld", status);
}

/* The request's headers, or NULL when out of memory. */
static struct curl_slist *request_headers(const char *auth, const char *content_type)
{
	char ct[128];
	snprintf(ct, sizeof(ct), "Content-Type: %s", content_type ? content_type : "");
	const char *lines[] = {auth, "Accept: application/json, application/octet-stream",
	                       "Expect:", content_type ? ct : NULL};
	struct curl_slist *list = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(lines) && lines[i]; i++) {
		struct curl_slist *l = curl_slist_append(list, lines[i]);
		if (!l) {
			curl_slist_free_all(list);
			return NULL;
		}
		list = l;
	}
	return list;
}

/* One request: body of len bytes with content_type (NULL: no body). On a reply, whatever its
 * status, *ret_data (malloc'd, NUL-terminated, may be NULL when empty), *ret_len and *ret_status;
 * on a transport failure err says why. */
static int http_perform(struct cli *c, const char *method, const char *path,
                        const char *content_type, const void *body, size_t len, long timeout_s,
                        char **ret_data, size_t *ret_len, long *ret_status,
                        struct cli_output_meta *ret_meta, const struct cli_sink *sink,
                        struct sk_error *err)
{
	int r = cli_resolve(c, err);
	if (r < 0)
		return r;
	if (!c->curl) {
		c->curl = curl_easy_init();
		if (!c->curl)
			return sk_error_set(err, -ENOMEM, "cannot start libcurl");
	}
	CURL *h = c->curl;
	curl_easy_reset(h); /* keeps the connection for the next request */

	_cleanup_free_ char *url = NULL;
	_cleanup_(token_freep) char *auth = NULL;
	if (asprintf(&url, "%s%s", c->url, path) < 0 ||
	    asprintf(&auth, "Authorization: Bearer %s", c->token) < 0)
		return sk_error_errno(err, -ENOMEM, "request");
	struct curl_slist *headers = request_headers(auth, content_type);
	if (!headers)
		return sk_error_errno(err, -ENOMEM, "request");

	struct reply_buf reply = {.skiff_offset = -1, .skiff_eof = -1, .sink = sink, .curl = h};
	char errbuf[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, reply_on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &reply);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "skiff/" SKIFF_VERSION);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, CLI_CONNECT_TIMEOUT_MS);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
	/* A wait or exec can be silent for long: keepalive finds a peer that is gone. */
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 30L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 10L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, reply_on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &reply);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
	if (url_is_loopback(c->url))
		curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	if (strcmp(method, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L); /* else curl waits for a body */
	} else if (strcmp(method, "GET") != 0) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? (const char *)body : "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? len : 0));
		if (strcmp(method, "POST") != 0)
			curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	}

	CURLcode cr = curl_easy_perform(h);
	long status = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(headers); /* copies of the token */
	_cleanup_free_ char *data = reply.data;

	if (cr != CURLE_OK) {
		if (reply.sink_stopped)
			return sk_error_set(err, -ECANCELED, "%s %s: stopped by its reader", method,
			                    path);
		if (reply.too_big)
			return sk_error_set(err, -EFBIG, "%s %s: reply larger than %u MiB", method,
			                    path, CLI_MAX_RESPONSE_BYTES >> 20);
		if (cr == CURLE_ABORTED_BY_CALLBACK)
			return sk_error_set(err, -EINTR, "%s %s: interrupted", method, path);
		if (cr == CURLE_OPERATION_TIMEDOUT && status == 0 && !reply.len &&
		    strstr(errbuf, "onnect"))
			return sk_error_set(err, -ETIMEDOUT, "cannot reach the server at %s: %s",
			                    c->url, errbuf);
		if (cr == CURLE_OPERATION_TIMEDOUT)
			return sk_error_set(err, -ETIMEDOUT, "%s %s: no reply after %ld s", method,
			                    path, timeout_s);
		if (cr == CURLE_COULDNT_CONNECT || cr == CURLE_COULDNT_RESOLVE_HOST)
			return sk_error_set(
			    err, -ECONNREFUSED,
			    "cannot reach the server at %s: %s (is skiffd running?)", c->url,
			    errbuf[0] ? errbuf : curl_easy_strerror(cr));
		return sk_error_set(err, -EIO, "%s %s: %s", method, path,
		                    errbuf[0] ? errbuf : curl_easy_strerror(cr));
	}
	*ret_data = TAKE_PTR(data);
	*ret_len = reply.len;
	*ret_status = status;
	if (ret_meta) {
		ret_meta->offset = reply.skiff_offset;
		ret_meta->eof = reply.skiff_eof;
	}
	return 0;
}

int cli_http(struct cli *c, const char *method, const char *path, json_t *body, long timeout_s,
             json_t **ret, struct sk_error *err)
{
	_cleanup_free_ char *payload = NULL, *data = NULL;
	if (body && !(payload = json_dumps(body, JSON_COMPACT)))
		return sk_error_errno(err, -ENOMEM, "request body");
	size_t len = 0;
	long status = 0;
	int r = http_perform(c, method, path, payload ? "application/json" : NULL, payload,
	                     payload ? strlen(payload) : 0, timeout_s, &data, &len, &status, NULL,
	                     NULL, err);
	if (r < 0)
		return r;
	json_t *v = NULL;
	if (len > 0) {
		json_error_t jerr;
		v = json_loadb(data, len, JSON_ALLOW_NUL, &jerr);
		if (!v && status >= 200 && status < 300)
			return sk_error_set(err, -EPROTO, "%s %s: reply is not JSON: %s", method,
			                    path, jerr.text);
	}
	if (status < 200 || status >= 300) {
		r = reply_error(status, v, err);
		json_decref(v);
		return status == 503 ? -EAGAIN : r; /* busy: a caller may try again */
	}
	*ret = v;
	return 0;
}

/* http_perform with raw bytes, a non-2xx reply turned into err (-EAGAIN for a 503). */
static int perform_raw(struct cli *c, const char *method, const char *path, const void *body,
                       size_t len, long timeout_s, char **ret, size_t *ret_len,
                       struct cli_output_meta *ret_meta, const struct cli_sink *sink,
                       struct sk_error *err)
{
	_cleanup_free_ char *data = NULL;
	size_t n = 0;
	long status = 0;
	int r = http_perform(c, method, path, body ? "application/octet-stream" : NULL, body, len,
	                     timeout_s, &data, &n, &status, ret_meta, sink, err);
	if (r < 0)
		return r;
	if (status < 200 || status >= 300) {
		json_t *v = n ? json_loadb(data, n, 0, NULL) : NULL;
		r = reply_error(status, v, err);
		json_decref(v);
		return status == 503 ? -EAGAIN : r;
	}
	*ret = TAKE_PTR(data);
	*ret_len = n;
	return 0;
}

int cli_http_raw(struct cli *c, const char *method, const char *path, const void *body, size_t len,
                 long timeout_s, char **ret, size_t *ret_len, struct cli_output_meta *ret_meta,
                 struct sk_error *err)
{
	return perform_raw(c, method, path, body, len, timeout_s, ret, ret_len, ret_meta, NULL,
	                   err);
}

int cli_http_head(struct cli *c, const char *path, long *ret_status, struct sk_error *err)
{
	_cleanup_free_ char *data = NULL;
	size_t n;
	return http_perform(c, "HEAD", path, NULL, NULL, 0, CLI_REQUEST_TIMEOUT_S, &data, &n,
	                    ret_status, NULL, NULL, err);
}

int cli_http_stream(struct cli *c, const char *path, const struct cli_sink *sink,
                    struct sk_error *err)
{
	_cleanup_free_ char *data = NULL;
	size_t n;
	return perform_raw(c, "GET", path, NULL, 0, CLI_NO_TIMEOUT, &data, &n, NULL, sink, err);
}

int cli_list_all(struct cli *c, const char *path, json_t **ret, struct sk_error *err)
{
	_cleanup_json_ json_t *all = json_array();
	_cleanup_free_ char *cursor = NULL;
	char sep = strchr(path, '?') ? '&' : '?';
	if (!all)
		return sk_error_errno(err, -ENOMEM, "list");
	for (int page = 0;; page++) {
		if (page >= CLI_MAX_LIST_PAGES)
			return sk_error_set(err, -E2BIG, "GET %s: more than %d pages", path,
			                    CLI_MAX_LIST_PAGES);
		_cleanup_free_ char *esc = cursor ? cli_escape(cursor) : NULL;
		_cleanup_free_ char *p = NULL;
		int n = esc ? asprintf(&p, "%s%climit=%d&cursor=%s", path, sep, CLI_LIST_PAGE_LIMIT,
		                       esc)
		            : asprintf(&p, "%s%climit=%d", path, sep, CLI_LIST_PAGE_LIMIT);
		if (n < 0)
			return sk_error_errno(err, -ENOMEM, "list");
		_cleanup_json_ json_t *reply = NULL;
		int r = cli_http(c, "GET", p, NULL, CLI_REQUEST_TIMEOUT_S, &reply, err);
		if (r < 0)
			return r;
		json_t *items = json_object_get(reply, "items");
		if (!json_is_array(items))
			return sk_error_set(err, -EPROTO, "GET %s: reply has no items", path);
		json_array_extend(all, items);
		const char *next = cli_json_str(reply, "next_cursor");
		if (!next || !next[0])
			break;
		if (cursor && strcmp(cursor, next) == 0)
			return sk_error_set(err, -EPROTO, "GET %s: the server repeats a cursor",
			                    path);
		free(cursor);
		cursor = strdup(next);
		if (!cursor)
			return sk_error_errno(err, -ENOMEM, "list");
	}
	*ret = TAKE_PTR(all);
	return 0;
}

char *cli_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t len = strlen(s);
	char *out = malloc(3 * len + 1), *o = out;
	if (!out)
		return NULL;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
			*o++ = (char)*p;
		} else {
			*o++ = '%';
			*o++ = hex[*p >> 4];
			*o++ = hex[*p & 15];
		}
	}
	*o = '\0';
	return out;
}

void cli_query_put(FILE *f, bool *first, const char *key, const char *value)
{
	_cleanup_free_ char *esc = cli_escape(value);
	fprintf(f, "%c%s=%s", *first ? '?' : '&', key, esc ? esc : "");
	*first = false;
}

/* ---- options and input ---- */

int cli_usage_error(const char *cmd, const char *usage, const char *fmt, ...)
{
	va_list ap;
	fputs("skiff: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nusage: skiff %s %s\n", cmd, usage);
	return EXIT_USAGE;
}

int cli_option_error(const char *cmd, const char *usage, int opt, char **argv)
{
	const char *arg = optind > 0 ? argv[optind - 1] : "?";
	if (opt == ':')
		return cli_usage_error(cmd, usage, "option '%s' needs a value", arg);
	if (optopt && optopt < 256 && arg[0] == '-' && arg[1] != '-')
		return cli_usage_error(cmd, usage, "unknown option '-%c'", optopt);
	return cli_usage_error(cmd, usage, "unknown option '%s'", arg);
}

int cli_fail(const struct sk_error *err)
{
	fputs("skiff: ", stderr);
	cli_print_safe(stderr, err->msg);
	fputc('\n', stderr);
	return 1;
}

int cli_split_dashdash(int argc, char **argv, char ***ret_cmd, int *ret_ncmd)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			*ret_cmd = argv + i + 1;
			*ret_ncmd = argc - i - 1;
			return i;
		}
	}
	*ret_cmd = NULL;
	*ret_ncmd = 0;
	return argc;
}

int cli_parse_pair(const char *s, char sep, const char *what, json_t *obj, struct sk_error *err)
{
	const char *p = strchr(s, sep);
	if (!p || p == s)
		return sk_error_set(err, -SK_EINVAL_SPEC, "%s '%s': expected KEY%cVALUE", what, s,
		                    sep);
	_cleanup_free_ char *key = strndup(s, p - s);
	if (!key)
		return sk_error_errno(err, -ENOMEM, "%s", what);
	if (json_object_get(obj, key))
		return sk_error_set(err, -SK_EINVAL_SPEC, "%s: key '%s' given twice", what, key);
	json_t *v = json_string(p + 1);
	if (!v || json_object_set_new(obj, key, v) < 0)
		return sk_error_set(err, -SK_EINVAL_SPEC, "%s '%s': not valid UTF-8", what, s);
	return 0;
}

int cli_parse_int(const char *s, const char *what, long long min, long long max, long long *ret,
                  struct sk_error *err)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "%s '%s': expected an integer from %lld to %lld", what, s, min,
		                    max);
	*ret = v;
	return 0;
}

int cli_parse_real(const char *s, const char *what, double min, double max, double *ret,
                   struct sk_error *err)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < min || v > max)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "%s '%s': expected a number from %g to %g", what, s, min, max);
	*ret = v;
	return 0;
}

json_t *cli_json_argv(int argc, char **argv)
{
	json_t *a = json_array();
	for (int i = 0; a && i < argc; i++) {
		json_t *s = json_string(argv[i]);
		if (!s || json_array_append_new(a, s) < 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

/* ---- groups ---- */

void cli_group_help(FILE *f, const char *group, const struct cli_command *table, size_t n)
{
	fprintf(f, "usage: skiff %s COMMAND [OPTIONS]\n\ncommands:\n", group);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "  %-8s %.*s\n", table[i].name, (int)strcspn(table[i].summary, "\n"),
		        table[i].summary);
	fprintf(f, "\n'skiff %s COMMAND --help' shows a command's options.\n", group);
}

static bool is_help(const char *s)
{
	return strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0 || strcmp(s, "help") == 0;
}

int cli_group_run(struct cli *c, const char *group, const struct cli_command *table, size_t n,
                  int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "skiff: '%s' needs a command\n", group);
		cli_group_help(stderr, group, table, n);
		return EXIT_USAGE;
	}
	if (is_help(argv[1])) {
		cli_group_help(stdout, group, table, n);
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (strcmp(argv[1], table[i].name) != 0)
			continue;
		char **cmd;
		int ncmd;
		int nopts = cli_split_dashdash(argc - 1, argv + 1, &cmd, &ncmd);
		for (int j = 1; j < nopts; j++) {
			if (strcmp(argv[1 + j], "--help") == 0 || strcmp(argv[1 + j], "-h") == 0) {
				printf("usage: skiff %s %s %s\n\n%s\n", group, table[i].name,
				       table[i].usage, table[i].summary);
				return 0;
			}
		}
		optind = 0; /* each parse starts afresh */
		return table[i].run(c, argc - 1, argv + 1);
	}
	fputs("skiff: unknown command '", stderr);
	cli_print_safe(stderr, argv[1]);
	fprintf(stderr, "' for 'skiff %s'\n", group);
	cli_group_help(stderr, group, table, n);
	return EXIT_USAGE;
}

/* ---- output ---- */

void cli_print_json(const json_t *v)
{
	json_dumpf(v, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY);
	fputc('\n', stdout);
}

const char *cli_json_str(const json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

/* Replace control characters in place. */
static void sanitize(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < ' ' || *s == 0x7f)
			*s = '?';
}

void cli_print_safe(FILE *f, const char *s)
{
	for (; *s; s++)
		fputc((unsigned char)*s < ' ' || *s == 0x7f ? '?' : *s, f);
}

char *cli_value_text(const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);
	char *s = NULL;
	if (!v || json_is_null(v))
		s = strdup("-");
	else if (json_is_string(v))
		s = strdup(json_string_value(v));
	else if (json_is_integer(v))
		(void)!asprintf(&s, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else if (json_is_real(v))
		(void)!asprintf(&s, "%g", json_real_value(v));
	else
		s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	if (s)
		sanitize(s);
	return s;
}

/* Columns a string takes on a terminal, counting a UTF-8 sequence as one. */
static size_t text_width(const char *s)
{
	size_t w = 0;
	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

/* n bytes as a person reads them: "512 B", "1.5 KiB", "203.4 MiB". */
static char *bytes_text(json_int_t n)
{
	static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
	char *s = NULL;
	if (n < 1024) {
		(void)!asprintf(&s, "%" JSON_INTEGER_FORMAT " B", n);
		return s;
	}
	double v = (double)n;
	size_t u = 0;
	for (v /= 1024; v >= 1024 && u + 1 < ARRAY_SIZE(units); u++)
		v /= 1024;
	(void)!asprintf(&s, "%.1f %s", v, units[u]);
	return s;
}

static char *cell_text(const json_t *obj, const struct cli_column *col)
{
	const json_t *v = json_object_get(obj, col->key);
	if (col->bytes && json_is_integer(v))
		return bytes_text(json_integer_value(v));
	return cli_value_text(obj, col->key);
}

void cli_print_table(const json_t *items, const struct cli_column *cols, size_t ncols)
{
	size_t nrows = json_array_size(items);
	size_t width[16] = {0};
	assert(ncols <= ARRAY_SIZE(width));
	char **cells = calloc((nrows + 1) * ncols, sizeof(*cells));
	if (!cells)
		return;
	for (size_t j = 0; j < ncols; j++)
		cells[j] = strdup(cols[j].header);
	for (size_t i = 0; i < nrows; i++)
		for (size_t j = 0; j < ncols; j++)
			cells[(i + 1) * ncols + j] = cell_text(json_array_get(items, i), &cols[j]);
	for (size_t k = 0; k < (nrows + 1) * ncols; k++)
		if (cells[k] && text_width(cells[k]) > width[k % ncols])
			width[k % ncols] = text_width(cells[k]);
	for (size_t i = 0; i <= nrows; i++) {
		for (size_t j = 0; j < ncols; j++) {
			const char *s = cells[i * ncols + j] ? cells[i * ncols + j] : "?";
			fputs(s, stdout);
			if (j + 1 < ncols)
				printf("%*s", (int)(width[j] - text_width(s) + 2), "");
		}
		fputc('\n', stdout);
	}
	for (size_t k = 0; k < (nrows + 1) * ncols; k++)
		free(cells[k]);
	free(cells);
}

void cli_print_fields(const json_t *obj)
{
	const char *key;
	const json_t *v;
	int w = 0;
	json_object_foreach ((json_t *)obj, key, v) {
		if ((int)strlen(key) > w)
			w = (int)strlen(key);
	}
	json_object_foreach ((json_t *)obj, key, v) {
		_cleanup_free_ char *text = cli_value_text(obj, key);
		cli_print_safe(stdout, key);
		printf(":%*s ", w - (int)strlen(key), "");
		cli_print_safe(stdout, text ? text : "?");
		fputc('\n', stdout);
	}
}

int cli_parse_json_flag(const char *cmd, const char *usage, int argc, char **argv, bool *json)
{
	enum { OPT_JSON = 256 };
	static const struct option options[] = {
	    {"json", no_argument, NULL, OPT_JSON},
	    {NULL, 0, NULL, 0},
	};
	int opt;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1) {
		if (opt != OPT_JSON)
			return cli_option_error(cmd, usage, opt, argv);
		*json = true;
	}
	return 0;
}

int cli_list_command(struct cli *c, const char *cmd, const char *usage, int argc, char **argv,
                     const char *path, const struct cli_column *cols, size_t ncols)
{
	bool json = false;
	int st = cli_parse_json_flag(cmd, usage, argc, argv, &json);
	if (st)
		return st;
	if (optind < argc)
		return cli_usage_error(cmd, usage, "unexpected argument '%s'", argv[optind]);
	struct sk_error err = {0};
	_cleanup_json_ json_t *items = NULL;
	if (cli_list_all(c, path, &items, &err) < 0)
		return cli_fail(&err);
	if (json)
		cli_print_json(items);
	else
		cli_print_table(items, cols, ncols);
	return 0;
}

const char *cli_one_arg(const char *cmd, const char *usage, const char *what, int argc, char **argv,
                        int *ret_status)
{
	if (optind >= argc || !argv[optind][0]) {
		*ret_status = cli_usage_error(cmd, usage, "missing %s", what);
		return NULL;
	}
	if (optind + 1 < argc) {
		*ret_status =
		    cli_usage_error(cmd, usage, "unexpected argument '%s'", argv[optind + 1]);
		return NULL;
	}
	return argv[optind];
}

int cli_rm_command(struct cli *c, const char *cmd, const char *usage, const char *what, int argc,
                   char **argv, const char *collection)
{
	static const struct option options[] = {{NULL, 0, NULL, 0}};
	int opt, st = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1)
		return cli_option_error(cmd, usage, opt, argv);
	if (optind >= argc)
		return cli_usage_error(cmd, usage, "missing %s", what);
	for (int i = optind; i < argc; i++) {
		struct sk_error err = {0};
		_cleanup_free_ char *esc = cli_escape(argv[i]);
		_cleanup_free_ char *path = NULL;
		_cleanup_json_ json_t *reply = NULL;
		if (!esc || asprintf(&path, "%s/%s", collection, esc) < 0)
			return cli_fail(&(struct sk_error){.msg = "out of memory"});
		if (cli_http(c, "DELETE", path, NULL, CLI_REQUEST_TIMEOUT_S, &reply, &err) < 0)
			st = cli_fail(&err);
		else
			printf("%s\n", argv[i]);
	}
	return st;
}
