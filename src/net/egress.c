/* Egress as the runtime sees it (struct rt_net): configuration, attach and detach of one
 * sandbox, and the instance's setup and cleanup. A sandbox's egress state outside its own
 * namespace (its host link, its allowlist's set elements) is recorded in its state directory
 * (EGRESS_RECORD_FILE: "addr A.B.C.D" then "allow A.B.C.D/N" lines), so that whoever finds it
 * again (a restarted spawner, a detach after a restart) can undo exactly that. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <net/if.h>
#include <nftables/libnftables.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../lib/fsutil.h"
#include "../runtime/spec.h"
#include "net.h"

#define RECORD_MAX_BYTES  (64 + SPEC_MAX_CIDRS * (SPEC_CIDR_MAX_CHARS + 8))
#define NFT_CMD_MAX_BYTES (512 + SPEC_MAX_CIDRS * 48)
#define RULESET_MAX_BYTES (8192)

void egress_config_init(struct egress_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	egress_config_set_subnet(cfg, EGRESS_DEFAULT_SUBNET, NULL);
}

static int addr_parse(const char *text, uint32_t *ret)
{
	struct in_addr in;
	if (inet_pton(AF_INET, text, &in) != 1)
		return -EINVAL;
	*ret = ntohl(in.s_addr);
	return 0;
}

int egress_config_set_subnet(struct egress_config *cfg, const char *text, struct sk_error *err)
{
	struct spec s;
	spec_init(&s);
	s.network = SPEC_NET_EGRESS;
	/* The same strict parser as allowlists, which however refuses private ranges: parse a
	 * public stand-in of the same shape, then check the range itself. */
	char addr[16];
	const char *slash = strchr(text, '/');
	unsigned prefix;
	uint32_t a;
	if (!slash || (size_t)(slash - text) >= sizeof(addr) ||
	    sscanf(slash + 1, "%u", &prefix) != 1 || prefix > 32)
		goto bad;
	memcpy(addr, text, (size_t)(slash - text));
	addr[slash - text] = '\0';
	if (addr_parse(addr, &a) < 0)
		goto bad;
	struct spec_cidr c = {.addr = a, .prefix = (uint8_t)prefix};
	uint32_t mask = prefix ? 0xffffffffu << (32 - prefix) : 0;
	if (a & ~mask)
		return sk_error_set(err, -SK_EINVAL_SPEC, "--egress-subnet %s: host bits set",
		                    text);
	if (prefix > EGRESS_MAX_SUBNET_BITS)
		return sk_error_set(
		    err, -SK_EINVAL_SPEC,
		    "--egress-subnet %s: too small; a /%d or larger holds an address "
		    "for every sandbox",
		    text, EGRESS_MAX_SUBNET_BITS);
	const char *blocked = spec_cidr_blocked(&c);
	if (!blocked || (strcmp(blocked, "10.0.0.0/8") && strcmp(blocked, "172.16.0.0/12") &&
	                 strcmp(blocked, "192.168.0.0/16") && strcmp(blocked, "100.64.0.0/10")))
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "--egress-subnet %s: must lie in a private range (10.0.0.0/8, "
		                    "172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10)",
		                    text);
	cfg->subnet = a;
	cfg->prefix = (uint8_t)prefix;
	return 0;
bad:
	return sk_error_set(err, -SK_EINVAL_SPEC,
	                    "--egress-subnet: expected an IPv4 range like %s, got '%.32s'",
	                    EGRESS_DEFAULT_SUBNET, text);
}

int egress_config_add_dns(struct egress_config *cfg, const char *text, struct sk_error *err)
{
	uint32_t a;
	if (addr_parse(text, &a) < 0)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "--dns: expected an IPv4 address, got '%.64s'", text);
	if ((a >> 24) == 127 || a == 0)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "--dns %s: a loopback resolver can't be reached from a sandbox",
		                    text);
	for (int i = 0; i < cfg->ndns; i++)
		if (cfg->dns[i] == a)
			return 0;
	if (cfg->ndns >= EGRESS_MAX_DNS)
		return sk_error_set(err, -SK_EINVAL_SPEC, "--dns: at most %d resolvers",
		                    EGRESS_MAX_DNS);
	cfg->dns[cfg->ndns++] = a;
	return 0;
}

int egress_config_dns_from_resolv_conf(struct egress_config *cfg, const char *text,
                                       int *ret_skipped)
{
	int added = 0, skipped = 0;
	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		char word[16], addr[64];
		if (sscanf(p, "%15s %63s", word, addr) != 2 || strcmp(word, "nameserver") != 0)
			continue;
		uint32_t a;
		if (addr_parse(addr, &a) < 0)
			continue; /* IPv6: egress is IPv4 only */
		if ((a >> 24) == 127) {
			skipped++;
			continue;
		}
		int before = cfg->ndns;
		if (egress_config_add_dns(cfg, addr, NULL) == 0 && cfg->ndns > before)
			added++;
	}
	*ret_skipped = skipped;
	return added;
}

uint32_t egress_addr(const struct egress_config *cfg, int slot)
{
	uint64_t size = 1ull << (32 - cfg->prefix);
	if (slot < 0 || (uint64_t)slot + 3 > size) /* network, gateway, broadcast */
		return 0;
	return cfg->subnet + 2 + (uint32_t)slot;
}

static void link_name(const struct egress *e, int slot, char *buf, size_t size)
{
	snprintf(buf, size, EGRESS_LINK_PREFIX_FMT "%x", e->rt->instance, (unsigned)slot);
}

/* The nft commands that add (or delete) a record's elements; "" when it has no allowlist. */
static int elements_cmd(const struct egress *e, const char *verb, uint32_t addr,
                        const struct spec_cidr *cidrs, size_t n, char *buf, size_t size)
{
	buf[0] = '\0';
	if (!n)
		return 0;
	char a[16], c[SPEC_CIDR_MAX_CHARS + 1];
	egress_addr_format(addr, a, sizeof(a));
	size_t len = 0;
	int w = snprintf(buf, size,
	                 "%s element inet " EGRESS_TABLE_FMT " limited { %s }\n"
	                 "%s element inet " EGRESS_TABLE_FMT " allow { ",
	                 verb, e->rt->instance, a, verb, e->rt->instance);
	if (w < 0 || (size_t)w >= size)
		return -ENOBUFS;
	len = (size_t)w;
	for (size_t i = 0; i < n; i++) {
		spec_cidr_format(&cidrs[i], c, sizeof(c));
		w = snprintf(buf + len, size - len, "%s%s . %s", i ? ", " : "", a, c);
		if (w < 0 || (size_t)w >= size - len)
			return -ENOBUFS;
		len += (size_t)w;
	}
	w = snprintf(buf + len, size - len, " }\n");
	return w < 0 || (size_t)w >= size - len ? -ENOBUFS : 0;
}

struct record {
	uint32_t addr;
	struct spec_cidr cidrs[SPEC_MAX_CIDRS];
	size_t n;
};

static int record_read(const char *sbdir, struct record *ret)
{
	char path[600], buf[RECORD_MAX_BYTES];
	snprintf(path, sizeof(path), "%s/" EGRESS_RECORD_FILE, sbdir);
	ssize_t len = fs_read_at(AT_FDCWD, path, buf, sizeof(buf));
	if (len < 0)
		return (int)len;
	memset(ret, 0, sizeof(*ret));
	struct spec s;
	spec_init(&s);
	s.network = SPEC_NET_EGRESS;
	/* Strict, and whole only with its "end" line: a record read short would give its sandbox
	 * fewer allowlist entries, or none (no limit at all). A bad one counts as no record: the
	 * sandbox's link goes rather than run without its allowlist. */
	int ended = 0;
	for (char *p = buf; *p && !ended;) {
		char *nl = strchr(p, '\n');
		if (!nl)
			return -EINVAL;
		*nl = '\0';
		char word[8], val[32], extra;
		int n = sscanf(p, "%7s %31s %c", word, val, &extra);
		if (n == 1 && !strcmp(word, "end"))
			ended = 1;
		else if (n != 2)
			return -EINVAL;
		else if (!strcmp(word, "addr") && !ret->addr) {
			if (addr_parse(val, &ret->addr) < 0)
				return -EINVAL;
		} else if (strcmp(word, "allow") || spec_add_cidr(&s, val, NULL) < 0)
			return -EINVAL;
		p = nl + 1;
	}
	memcpy(ret->cidrs, s.cidrs, s.ncidrs * sizeof(s.cidrs[0]));
	ret->n = s.ncidrs;
	return ret->addr && ended ? 0 : -EINVAL;
}

static int record_write(const char *sbdir, uint32_t addr, const struct spec *spec,
                        struct sk_error *err)
{
	char path[600], buf[RECORD_MAX_BYTES], a[16], c[SPEC_CIDR_MAX_CHARS + 1];
	egress_addr_format(addr, a, sizeof(a));
	size_t len = (size_t)snprintf(buf, sizeof(buf), "addr %s\n", a);
	for (size_t i = 0; i < spec->ncidrs; i++) {
		spec_cidr_format(&spec->cidrs[i], c, sizeof(c));
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "allow %s\n", c);
	}
	len += (size_t)snprintf(buf + len, sizeof(buf) - len, "end\n");
	/* Whole or not there (renamed into place), whatever happens while it is written. */
	char tmp[620];
	snprintf(path, sizeof(path), "%s/" EGRESS_RECORD_FILE, sbdir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	_cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int r = 0;
	if (fd < 0)
		r = -errno;
	else if (write(fd, buf, len) != (ssize_t)len)
		r = -EIO;
	else if (rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return sk_error_errno(err, r, "write %s", path);
	}
	return 0;
}

static int table_install(struct egress *e, struct sk_error *err);

/* Before every egress start, not once per process: the table may have gone behind our back (a
 * host firewall reload that flushes the whole ruleset), and a veth without it would forward
 * unfiltered. The check is one netlink round trip. */
static int table_ensure(struct egress *e, struct sk_error *err)
{
	int r = rt_net_table_exists(e->rt);
	if (r == 1)
		return 0;
	if (r < 0)
		return sk_error_errno(err, r, "look for the egress firewall");
	return table_install(e, err);
}

static void sandbox_detach(void *ctx, struct rt_sandbox *sb)
{
	struct egress *e = ctx;
	struct record rec;
	if (record_read(rt_sandbox_dir(sb), &rec) < 0)
		return;
	char name[IFNAMSIZ];
	uint32_t off = rec.addr - e->cfg.subnet - 2;
	link_name(e, (int)off, name, sizeof(name));
	/* Gone with the sandbox's namespace already, or soon (namespaces die asynchronously):
	 * delete it now so that the slot's next sandbox finds the name free. */
	egress_link_delete(e, name);
	egress_conntrack_forget(e, rec.addr);
	char cmd[NFT_CMD_MAX_BYTES];
	if (rec.n && elements_cmd(e, "delete", rec.addr, rec.cidrs, rec.n, cmd, sizeof(cmd)) == 0)
		egress_nft_run(e, cmd, NULL);
	char path[600];
	snprintf(path, sizeof(path), "%s/" EGRESS_RECORD_FILE, rt_sandbox_dir(sb));
	unlink(path);
}

static int sandbox_attach(void *ctx, struct rt_sandbox *sb, const struct spec *spec,
                          struct sk_error *err)
{
	struct egress *e = ctx;
	int slot = rt_sandbox_slot(sb);
	uint32_t addr = egress_addr(&e->cfg, slot);
	if (!addr)
		return sk_error_set(err, -EADDRNOTAVAIL,
		                    "no egress address for uid slot %d in the egress subnet", slot);
	int r = table_ensure(e, err);
	if (r < 0)
		return r;
	if ((r = record_write(rt_sandbox_dir(sb), addr, spec, err)) < 0)
		return r;
	char cmd[NFT_CMD_MAX_BYTES];
	/* The allowlist is in place before the link exists, so the sandbox is never unfiltered.
	 */
	if (spec->ncidrs) {
		if (elements_cmd(e, "add", addr, spec->cidrs, spec->ncidrs, cmd, sizeof(cmd)) < 0)
			r = sk_error_set(err, -ENOBUFS, "allowlist too long");
		else
			r = egress_nft_run(e, cmd, err);
		if (r < 0) {
			sk_error_prefix(err, "install the sandbox's allowlist");
			sandbox_detach(e, sb);
			return r;
		}
	}
	/* What a previous holder of the address left, where its end could not say (a gc
	 * without egress, a crash). */
	if ((r = egress_conntrack_forget(e, addr)) < 0) {
		sk_error_errno(err, r, "forget the connections of the sandbox's address");
		sandbox_detach(e, sb);
		return r;
	}
	char name[IFNAMSIZ];
	link_name(e, slot, name, sizeof(name));
	if ((r = egress_link_create(e, sb, name, addr, err)) < 0) {
		sandbox_detach(e, sb);
		return r;
	}
	return 0;
}

/* What still runs: the records of the instance's running sandboxes. */
struct live {
	const struct egress_config *cfg;
	struct record *recs;
	int n;
};

/* -errno when the list can't be made: then nothing is known to be gone. A sandbox counts
 * unless its init is known to be gone (exited, lost): one whose state can't be read yet may
 * run. */
static int live_load(struct egress *e, struct live *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->cfg = &e->cfg;
	struct rt_sandbox_info *list = NULL;
	int n = rt_sandbox_list(e->rt, &list, NULL);
	if (n <= 0) {
		free(list);
		return n;
	}
	ret->recs = calloc((size_t)n, sizeof(*ret->recs));
	if (!ret->recs) {
		free(list);
		return -ENOMEM;
	}
	for (int i = 0; i < n; i++) {
		if (list[i].state == RT_STATE_EXITED || list[i].state == RT_STATE_LOST)
			continue;
		char dir[600];
		snprintf(dir, sizeof(dir), "%s/%s", e->rt->inst_dir, list[i].id);
		if (record_read(dir, &ret->recs[ret->n]) == 0)
			ret->n++;
	}
	free(list);
	return 0;
}

static int live_has_slot(int slot, void *ud)
{
	const struct live *l = ud;
	for (int i = 0; i < l->n; i++)
		if (l->recs[i].addr == egress_addr(l->cfg, slot))
			return 1;
	return 0;
}

/* After a crash: the table again, with the elements of every sandbox that still runs, in one
 * transaction. The first one lets the host forward too. */
static int table_rebuild(struct egress *e, const struct live *l, struct sk_error *err)
{
	int r = fs_write_str_at(AT_FDCWD, "/proc/sys/net/ipv4/ip_forward", "1");
	if (r < 0)
		return sk_error_errno(err, r, "enable net.ipv4.ip_forward");
	size_t size = RULESET_MAX_BYTES + (size_t)l->n * NFT_CMD_MAX_BYTES;
	_cleanup_free_ char *buf = malloc(size);
	if (!buf)
		return sk_error_set(err, -ENOMEM, "out of memory");
	int len = egress_ruleset_format(&e->cfg, e->rt->instance, buf, size);
	if (len < 0)
		return sk_error_set(err, -ENOBUFS, "the egress ruleset is too long");
	/* A sandbox left out would run without its allowlist: all or nothing. */
	for (int i = 0; i < l->n; i++) {
		if (elements_cmd(e, "add", l->recs[i].addr, l->recs[i].cidrs, l->recs[i].n,
		                 buf + len, size - (size_t)len) < 0)
			return sk_error_set(err, -ENOBUFS, "the egress ruleset is too long");
		len += (int)strlen(buf + len);
	}
	if ((r = egress_nft_run(e, buf, err)) < 0)
		return sk_error_prefix(err, "install the egress firewall");
	e->installed = 1;
	return 0;
}

static int keep_none(int slot, void *ud)
{
	(void)slot;
	(void)ud;
	return 0;
}

/* The table with the elements of the sandboxes that run. Where that fails, their host links go
 * (their network with them) rather than run unfiltered. */
static int table_install(struct egress *e, struct sk_error *err)
{
	struct live l;
	int r = live_load(e, &l);
	if (r < 0)
		sk_error_errno(err, r, "list the instance's sandboxes");
	else
		r = table_rebuild(e, &l, err);
	egress_links_sweep(e, r < 0 ? keep_none : live_has_slot, &l);
	free(l.recs);
	return r;
}

int egress_check(struct egress *e, struct sk_error *err)
{
	/* Nothing to look after before this worker's (or its predecessor's) first egress
	 * sandbox: no listing of every sandbox each second for instances that never use it. */
	if (!e->nft || !e->installed || rt_net_table_exists(e->rt) != 0)
		return 0;
	struct live l;
	int r = live_load(e, &l);
	int n = l.n;
	free(l.recs);
	if (r == 0 && n == 0)
		return 0; /* no egress sandbox runs: the next start installs it */
	if ((r = table_install(e, err)) < 0)
		return r;
	return sk_error_set(err, -EAGAIN,
	                    "the egress firewall was removed from outside; installed again for "
	                    "the %d egress sandbox(es) that run",
	                    n);
}

static void resolv_conf_make(struct egress *e)
{
	size_t len = 0;
	char a[16];
	for (int i = 0; i < e->cfg.ndns; i++) {
		egress_addr_format(e->cfg.dns[i], a, sizeof(a));
		len += (size_t)snprintf(e->resolv_conf + len, sizeof(e->resolv_conf) - len,
		                        "nameserver %s\n", a);
	}
	if (!e->cfg.ndns)
		snprintf(e->resolv_conf, sizeof(e->resolv_conf),
		         "# skiff: no DNS resolver is allowed for this sandbox\n");
}

int egress_init(struct egress *e, struct rt *rt, const struct egress_config *cfg,
                struct sk_error *err)
{
	memset(e, 0, sizeof(*e));
	e->rt = rt;
	e->cfg = *cfg;
	e->seq = (unsigned)time(NULL);
	e->nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
	if (!e->nl || mnl_socket_bind(e->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		int r = sk_error_errno(err, -errno, "rtnetlink");
		egress_release(e);
		return r;
	}
	e->nft = nft_ctx_new(NFT_CTX_DEFAULT);
	if (!e->nft) {
		egress_release(e);
		return sk_error_set(err, -ENOMEM, "libnftables: no context");
	}
	nft_ctx_buffer_output(e->nft);
	nft_ctx_buffer_error(e->nft);
	resolv_conf_make(e);
	e->ops = (struct rt_net){.attach = sandbox_attach,
	                         .detach = sandbox_detach,
	                         .ctx = e,
	                         .resolv_conf = e->resolv_conf};
	/* The table again when one is there or some egress sandbox still runs (whose table may
	 * have gone while no skiffd ran): never a host link without it. */
	struct live l;
	int r = live_load(e, &l), n = l.n;
	free(l.recs);
	if (r < 0 || n > 0 || rt_net_table_exists(rt) != 0)
		r = table_install(e, err);
	else
		egress_links_sweep(e, live_has_slot, &(struct live){.cfg = &e->cfg});
	if (r < 0) {
		egress_release(e);
		return r;
	}
	rt->net = &e->ops;
	return 0;
}

void egress_release(struct egress *e)
{
	if (e->nft && e->rt && rt_net_table_exists(e->rt) == 1) {
		/* Kept while any sandbox of the instance may still use it, and when that can't be
		 * told. */
		struct live l;
		if (live_load(e, &l) == 0 && l.n == 0) {
			char cmd[64];
			snprintf(cmd, sizeof(cmd), "delete table inet " EGRESS_TABLE_FMT,
			         e->rt->instance);
			egress_nft_run(e, cmd, NULL);
		}
		free(l.recs);
	}
	if (e->rt && e->rt->net == &e->ops)
		e->rt->net = NULL;
	if (e->nl)
		mnl_socket_close(e->nl);
	if (e->nft)
		nft_ctx_free(e->nft);
	e->nl = NULL;
	e->nft = NULL;
}
