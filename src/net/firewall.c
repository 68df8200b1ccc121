/* The instance's nftables table (libnftables, from a text ruleset: readable, and applied as one
 * transaction). What it does, for traffic of the instance's veths (iifname sk<inst>-e*):
 *   prerouting: IPv6 dropped; a source address that does not route back through the veth it came
 *     in on is dropped (no spoofing another sandbox's address, or anyone's);
 *   input: the host's own addresses (and every service on them, the API included) refuse
 *     everything but DNS to an allowed resolver that is a host address;
 *   forward: DNS to the allowed resolvers and to no other server; then blocked ranges (private,
 * loopback, link-local, CGNAT, multicast, reserved, the egress subnet itself: no sandbox reaches
 * another, the control plane) dropped; then sandboxes with an allowlist (set "limited") reach only
 * their pairs in set "allow"; to the veths only replies (ct established,related); postrouting: the
 * egress subnet masqueraded behind the host's address where it leaves. Other tables (the host's own
 * firewall, other instances) see the same packets: a drop there still drops. */
#include <errno.h>
#include <nftables/libnftables.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../runtime/spec.h"
#include "net.h"

void egress_addr_format(uint32_t addr, char *buf, size_t size)
{
	snprintf(buf, size, "%u.%u.%u.%u", addr >> 24, (addr >> 16) & 0xff, (addr >> 8) & 0xff,
	         addr & 0xff);
}

/* Append to buf at *len; -ENOBUFS once it is full. */
static int append(char *buf, size_t size, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int append(char *buf, size_t size, size_t *len, const char *fmt, ...)
{
	if (*len >= size)
		return -ENOBUFS;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf + *len, size - *len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size - *len)
		return -ENOBUFS;
	*len += (size_t)n;
	return 0;
}

int egress_ruleset_format(const struct egress_config *cfg, const char *instance, char *buf,
                          size_t size)
{
	char table[32], veths[16], subnet[24], a[16];
	snprintf(table, sizeof(table), EGRESS_TABLE_FMT, instance);
	snprintf(veths, sizeof(veths), EGRESS_LINK_PREFIX_FMT "*", instance);
	egress_addr_format(cfg->subnet, a, sizeof(a));
	snprintf(subnet, sizeof(subnet), "%s/%u", a, cfg->prefix);
	size_t len = 0;
	int r = 0;
	/* "add" then "delete": the transaction replaces a table of that name whether or not one
	 * is there, and nothing runs unfiltered in between. */
	r |= append(buf, size, &len, "add table inet %s\ndelete table inet %s\n", table, table);
	r |= append(buf, size, &len, "table inet %s {\n\tset resolvers { type ipv4_addr;", table);
	for (int i = 0; i < cfg->ndns; i++) {
		egress_addr_format(cfg->dns[i], a, sizeof(a));
		r |= append(buf, size, &len, "%s%s", i ? ", " : " elements = { ", a);
	}
	r |= append(buf, size, &len, "%s }\n", cfg->ndns ? " }" : "");
	r |= append(buf, size, &len,
	            "\tset blocked { type ipv4_addr; flags interval; auto-merge; elements = { ");
	for (size_t i = 0; SPEC_BLOCKED_CIDRS[i]; i++)
		r |= append(buf, size, &len, "%s, ", SPEC_BLOCKED_CIDRS[i]);
	r |= append(buf, size, &len, "%s", subnet);
	if (cfg->control_plane) {
		egress_addr_format(cfg->control_plane, a, sizeof(a));
		r |= append(buf, size, &len, ", %s", a);
	}
	r |= append(buf, size, &len, " } }\n");
	r |=
	    append(buf, size, &len,
	           "\tset limited { type ipv4_addr; }\n"
	           "\tset allow { type ipv4_addr . ipv4_addr; flags interval; }\n"
	           "\tchain prerouting { type filter hook prerouting priority raw; policy accept;\n"
	           "\t\tiifname \"%s\" meta nfproto ipv6 drop\n"
	           "\t\tiifname \"%s\" fib saddr . iif oif missing drop\n\t}\n",
	           veths, veths);
	r |= append(buf, size, &len,
	            "\tchain input { type filter hook input priority filter; policy accept;\n"
	            "\t\tiifname \"%s\" jump remember\n"
	            "\t\tiifname \"%s\" jump to_resolver\n"
	            "\t\tiifname \"%s\" drop\n\t}\n",
	            veths, veths, veths);
	r |= append(buf, size, &len,
	            "\tchain forward { type filter hook forward priority filter; policy accept;\n"
	            "\t\tiifname \"%s\" jump from_sandbox\n"
	            "\t\toifname \"%s\" ct state established,related accept\n"
	            "\t\toifname \"%s\" drop\n\t}\n",
	            veths, veths, veths);
	r |= append(buf, size, &len,
	            "\tchain to_resolver {\n"
	            "\t\tip daddr @resolvers udp dport 53 accept\n"
	            "\t\tip daddr @resolvers tcp dport 53 accept\n\t}\n"
	            /* Each connection of a sandbox carries its address as conntrack mark
	             * (the source address as a raw 32-bit word): its end removes exactly
	             * those, so that replies still on their way never reach the next sandbox
	             * with that address. */
	            "\tchain remember {\n"
	            "\t\tmeta nfproto ipv4 ct mark set @nh,96,32\n\t}\n"
	            "\tchain from_sandbox {\n"
	            "\t\tjump remember\n"
	            "\t\tjump to_resolver\n"
	            "\t\tudp dport 53 drop\n"
	            "\t\ttcp dport 53 drop\n"
	            "\t\tip daddr @blocked drop\n"
	            "\t\tip saddr @limited jump limited\n"
	            "\t\taccept\n\t}\n"
	            "\tchain limited {\n"
	            "\t\tip saddr . ip daddr @allow return\n"
	            "\t\tdrop\n\t}\n");
	r |= append(buf, size, &len,
	            "\tchain postrouting { type nat hook postrouting priority srcnat; policy "
	            "accept;\n"
	            "\t\tip saddr %s oifname != \"%s\" masquerade\n\t}\n}\n",
	            subnet, veths);
	return r < 0 ? -ENOBUFS : (int)len;
}

int egress_nft_run(struct egress *e, const char *cmds, struct sk_error *err)
{
	if (nft_run_cmd_from_buffer(e->nft, cmds) != 0) {
		const char *msg = nft_ctx_get_error_buffer(e->nft);
		size_t n = strcspn(msg, "\n");
		return sk_error_set(err, -EIO, "nftables: %.*s", (int)(n > 400 ? 400 : n), msg);
	}
	nft_ctx_get_error_buffer(e->nft); /* reset */
	nft_ctx_get_output_buffer(e->nft);
	return 0;
}
