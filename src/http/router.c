/* Routing: match a request's path against the route table ("{}" matches one non-empty segment,
 * percent-decoded into a parameter; a final "{*}" matches the rest of the path as it came), and
 * decode query parameters and read request headers. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int http_pct_decode(const char *src, size_t len, char *dst, size_t size, bool plus_space)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		char c = src[i];
		if (c == '%') {
			if (len - i < 3)
				return -EINVAL;
			int hi = hexval(src[i + 1]), lo = hexval(src[i + 2]);
			if (hi < 0 || lo < 0)
				return -EINVAL;
			c = (char)(hi << 4 | lo);
			i += 2;
		} else if (c == '+' && plus_space) {
			c = ' ';
		}
		if (n + 1 >= size)
			return -E2BIG;
		dst[n++] = c;
	}
	if (size == 0)
		return -E2BIG;
	dst[n] = '\0';
	return (int)n;
}

int http_route_match(const char *pattern, const char *path, char *params_buf,
                     char *params[HTTP_MAX_PARAMS], size_t *ret_nparams)
{
	const char *p = pattern, *s = path;
	char *out = params_buf;
	size_t np = 0;
	bool bad = false;

	while (*p) {
		if (!strcmp(p, "{*}")) {
			/* The rest, raw: it is passed on, not interpreted. */
			if (np == HTTP_MAX_PARAMS)
				return 0;
			size_t rest = strlen(s);
			memcpy(out, s, rest + 1);
			params[np++] = out;
			p += 3;
			s += rest;
			break;
		}
		if (!*s)
			return 0;
		if (p[0] == '{' && p[1] == '}') {
			size_t seg = strcspn(s, "/");
			if (seg == 0 || np == HTTP_MAX_PARAMS)
				return 0;
			/* Decode now but fail only once the whole pattern matched: a bad parameter
			 * is a 400 for this route, not a reason to try the next one. */
			int n = http_pct_decode(s, seg, out, seg + 1, false);
			if (n < 0 || memchr(out, '/', (size_t)n) || strlen(out) != (size_t)n) {
				bad = true;
				n = 0;
				out[0] = '\0';
			}
			params[np++] = out;
			out += n + 1;
			p += 2;
			s += seg;
			continue;
		}
		if (*p != *s)
			return 0;
		p++;
		s++;
	}
	if (*p || *s)
		return 0;
	if (bad)
		return -EINVAL;
	*ret_nparams = np;
	return 1;
}

static bool method_matches(const char *route_method, const char *method)
{
	if (strcmp(route_method, "*") == 0 || strcmp(route_method, method) == 0)
		return true;
	/* HEAD is GET without the body. */
	return strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0;
}

static void allow_add(char *allow, size_t size, const char *method)
{
	size_t len = strlen(allow);
	const char *p = allow;
	size_t mlen = strlen(method);
	while (*p) {
		size_t w = strcspn(p, ",");
		if (w == mlen && memcmp(p, method, w) == 0)
			return;
		p += w;
		while (*p == ',' || *p == ' ')
			p++;
	}
	snprintf(allow + len, size - len, "%s%s", len ? ", " : "", method);
}

void http_route_find(struct http_req_priv *rp, const struct http_route *routes, size_t nroutes)
{
	struct http_request *req = &rp->pub;
	size_t plen = strlen(req->path);
	char *params[HTTP_MAX_PARAMS];
	size_t nparams = 0;
	bool path_matched = false;

	free(rp->params_buf);
	rp->params_buf = malloc(plen + HTTP_MAX_PARAMS + 1);
	if (!rp->params_buf) {
		rp->route_status = 503;
		snprintf(rp->route_msg, sizeof(rp->route_msg), "out of memory");
		return;
	}
	rp->allow[0] = '\0';
	for (size_t i = 0; i < nroutes; i++) {
		const struct http_route *r = &routes[i];
		int m = http_route_match(r->pattern, req->path, rp->params_buf, params, &nparams);
		if (m == 0)
			continue;
		if (!method_matches(r->method, req->method)) {
			path_matched = true;
			allow_add(rp->allow, sizeof(rp->allow), r->method);
			continue;
		}
		req->route = r;
		if (m < 0) {
			rp->route_status = 400;
			snprintf(rp->route_msg, sizeof(rp->route_msg),
			         "bad path parameter (bad escape, '/' or NUL)");
			return;
		}
		memcpy(req->params, params, nparams * sizeof(params[0]));
		req->nparams = nparams;
		rp->route_status = 0;
		return;
	}
	if (path_matched) {
		rp->route_status = 405;
		snprintf(rp->route_msg, sizeof(rp->route_msg), "method %s not allowed",
		         req->method);
	} else {
		rp->route_status = 404;
		snprintf(rp->route_msg, sizeof(rp->route_msg), "no such path");
	}
}

const char *http_header_get(const struct http_request *req, const char *name)
{
	for (size_t i = 0; i < req->nheaders; i++)
		if (strcasecmp(req->headers[i].name, name) == 0)
			return req->headers[i].value;
	return NULL;
}

int http_query_get(const struct http_request *req, const char *key, unsigned n, char *buf,
                   size_t size)
{
	const char *q = req->query ? req->query : "";
	size_t klen = strlen(key);
	char kbuf[256];

	while (*q) {
		size_t plen = strcspn(q, "&");
		const char *eq = memchr(q, '=', plen);
		size_t name_len = eq ? (size_t)(eq - q) : plen;
		int k = http_pct_decode(q, name_len, kbuf, sizeof(kbuf), true);
		if (k == -EINVAL)
			return -EINVAL;
		if (k >= 0 && (size_t)k == klen && memcmp(kbuf, key, klen) == 0) {
			if (n == 0) {
				if (!eq)
					return http_pct_decode("", 0, buf, size, true);
				return http_pct_decode(eq + 1, plen - name_len - 1, buf, size,
				                       true);
			}
			n--;
		}
		q += plen;
		if (*q == '&')
			q++;
	}
	return -ENOENT;
}
