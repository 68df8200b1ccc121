/* Network "egress" for sandboxes: routed veth pairs (no bridge: no layer-2 path between
 * sandboxes) set up over rtnetlink with libmnl, and one nftables table per runtime instance
 * installed with libnftables. Linked by skiffd only (skiff-box is static; Debian ships no static
 * libmnl or libnftables); it plugs into the runtime through struct rt_net.
 *
 * Addresses: the sandbox in uid slot N gets subnet + 2 + N (slots are unique host-wide, across
 * instances); every host-side veth carries the gateway address subnet + 1, which the sandbox
 * reaches through `default via GW dev eth0 onlink`; the host routes SANDBOX/32 to that veth.
 * Host-side links are named sk<instance>-e<slot in hex> (at most 12 bytes). */
#pragma once

#include <stdint.h>

#include "../lib/error.h"
#include "../runtime/runtime.h"

#define EGRESS_DEFAULT_SUBNET   "10.201.0.0/16"
#define EGRESS_MAX_DNS          3  /* like resolv.conf's MAXNS */
#define EGRESS_MAX_SUBNET_BITS  17 /* a subnet must hold gateway + every uid slot */
#define EGRESS_RESOLV_CONF_FILE "/etc/resolv.conf"
#define EGRESS_LINK_PREFIX_FMT  "sk%s-e" /* + the slot in hex */
#define EGRESS_TABLE_FMT        "skiff_%s"
#define EGRESS_RECORD_FILE      "egress" /* in the sandbox's state directory */

struct egress_config {
	uint32_t subnet; /* host byte order */
	uint8_t prefix;
	uint32_t dns[EGRESS_MAX_DNS];
	int ndns;
	uint32_t control_plane; /* the server's address when not on this host; 0: none */
};

struct mnl_socket;
struct nft_ctx;

struct egress {
	struct rt *rt;
	struct egress_config cfg;
	struct mnl_socket *nl; /* rtnetlink in the host's namespace */
	unsigned seq;
	struct nft_ctx *nft;
	int installed; /* the table was made by this process: egress_check looks after it */
	char resolv_conf[256];
	struct rt_net ops;
};

/* Fill cfg with the defaults: EGRESS_DEFAULT_SUBNET, no resolver, no control plane address. */
void egress_config_init(struct egress_config *cfg);
/* "A.B.C.D/N" with N at most EGRESS_MAX_SUBNET_BITS, inside a private range. */
int egress_config_set_subnet(struct egress_config *cfg, const char *text, struct sk_error *err);
/* One more resolver (an IPv4 address), at most EGRESS_MAX_DNS. */
int egress_config_add_dns(struct egress_config *cfg, const char *text, struct sk_error *err);
/* The resolvers of a resolv.conf text (the host's: the default). Loopback ones can't be
 * reached from a sandbox and are skipped; *ret_skipped counts them. Returns how many were
 * added. */
int egress_config_dns_from_resolv_conf(struct egress_config *cfg, const char *text,
                                       int *ret_skipped);

/* Plug egress into rt (rt->net): what a crashed run left is cleaned up (the instance's table,
 * when there is one, is rebuilt for the sandboxes that still run; host links of sandboxes that
 * are gone are removed). The table itself is installed by the first egress sandbox. */
int egress_init(struct egress *e, struct rt *rt, const struct egress_config *cfg,
                struct sk_error *err);
/* Unplug; the instance's table goes when no egress sandbox of the instance runs. */
void egress_release(struct egress *e);
/* Periodic: when the instance's table is gone while egress sandboxes run (removed from
 * outside, e.g. by a host firewall reload that flushes the ruleset), install it again. Returns
 * -EAGAIN with a message to log when it did, another -errno when it could not (their links are
 * then removed). */
int egress_check(struct egress *e, struct sk_error *err);

/* ---- parts, for the tests ---- */

/* The sandbox address of a slot, 0 when the subnet has no room for it. */
uint32_t egress_addr(const struct egress_config *cfg, int slot);
/* The instance's nftables ruleset (one transaction that replaces any table of the same name).
 */
int egress_ruleset_format(const struct egress_config *cfg, const char *instance, char *buf,
                          size_t size);
/* An address as text (buf at least 16 bytes). */
void egress_addr_format(uint32_t addr, char *buf, size_t size);

/* link.c: rtnetlink. */
int egress_link_create(struct egress *e, struct rt_sandbox *sb, const char *host_name,
                       uint32_t addr, struct sk_error *err);
int egress_link_delete(struct egress *e, const char *name);
/* Forget the conntrack entries of the sandbox with address addr (marked so by the ruleset):
 * replies on their way to a sandbox that ended must not reach the next one with its address. */
int egress_conntrack_forget(struct egress *e, uint32_t addr);
/* Remove the instance's host links for which keep(slot) is false. Returns how many. */
int egress_links_sweep(struct egress *e, int (*keep)(int slot, void *), void *ud);

/* firewall.c: nftables. */
int egress_nft_run(struct egress *e, const char *cmds, struct sk_error *err);
