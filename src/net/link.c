/* The links of an egress sandbox, over rtnetlink (libmnl): a veth pair made with its peer
 * directly in the sandbox's network namespace (no moment where both ends sit on the host), the
 * host end with the shared gateway address and a /32 route to the sandbox, the sandbox end as
 * eth0 with its address and a default route through the gateway. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <net/if.h>
#include <linux/if_link.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../lib/fsutil.h"
#include "net.h"

#define SANDBOX_ETH0_IFINDEX 2 /* a fresh namespace holds lo (1) only */

/* Send one request and wait for its acknowledgement; -errno of the kernel's answer. */
static int nl_request(struct mnl_socket *nl, struct nlmsghdr *nlh, unsigned *seq)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	nlh->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	nlh->nlmsg_seq = ++*seq;
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof(buf));
	if (n < 0)
		return -errno;
	if (mnl_cb_run(buf, (size_t)n, nlh->nlmsg_seq, 0, NULL, NULL) < 0)
		return -errno;
	return 0;
}

static struct nlmsghdr *msg_start(char *buf, uint16_t type, uint16_t flags)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = flags;
	return nlh;
}

static int link_up(struct mnl_socket *nl, unsigned *seq, int ifindex)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = msg_start(buf, RTM_NEWLINK, 0);
	struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = ifindex;
	ifi->ifi_flags = IFF_UP;
	ifi->ifi_change = IFF_UP;
	return nl_request(nl, nlh, seq);
}

static int addr_add(struct mnl_socket *nl, unsigned *seq, int ifindex, uint32_t addr)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = msg_start(buf, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE);
	struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
	ifa->ifa_family = AF_INET;
	ifa->ifa_prefixlen = 32;
	ifa->ifa_scope = RT_SCOPE_UNIVERSE;
	ifa->ifa_index = (unsigned)ifindex;
	uint32_t be = htonl(addr);
	mnl_attr_put_u32(nlh, IFA_LOCAL, be);
	mnl_attr_put_u32(nlh, IFA_ADDRESS, be);
	return nl_request(nl, nlh, seq);
}

/* A route to dst/dst_len through ifindex: on the link (gw 0), or via gw, which is on the link
 * whatever the addresses say (onlink). */
static int route_add(struct mnl_socket *nl, unsigned *seq, int ifindex, uint32_t dst, int dst_len,
                     uint32_t gw)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = msg_start(buf, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE);
	struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	rtm->rtm_family = AF_INET;
	rtm->rtm_dst_len = (unsigned char)dst_len;
	rtm->rtm_table = RT_TABLE_MAIN;
	rtm->rtm_protocol = RTPROT_STATIC;
	rtm->rtm_scope = gw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
	rtm->rtm_type = RTN_UNICAST;
	if (gw) {
		rtm->rtm_flags = RTNH_F_ONLINK;
		mnl_attr_put_u32(nlh, RTA_GATEWAY, htonl(gw));
	}
	if (dst_len)
		mnl_attr_put_u32(nlh, RTA_DST, htonl(dst));
	mnl_attr_put_u32(nlh, RTA_OIF, (uint32_t)ifindex);
	return nl_request(nl, nlh, seq);
}

/* The pair: host_name up on the host, eth0 (SANDBOX_ETH0_IFINDEX, down) in netns. */
static int veth_add(struct mnl_socket *nl, unsigned *seq, const char *host_name, int netns)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = msg_start(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
	struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_flags = IFF_UP;
	ifi->ifi_change = IFF_UP;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, host_name);
	struct nlattr *linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
	mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
	struct nlattr *data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
	struct nlattr *peer = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
	struct ifinfomsg *pifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*pifi));
	pifi->ifi_family = AF_UNSPEC;
	pifi->ifi_index = SANDBOX_ETH0_IFINDEX;
	/* Not up yet: a veth refuses to come up before its peer exists (ENOTCONN). */
	mnl_attr_put_strz(nlh, IFLA_IFNAME, "eth0");
	mnl_attr_put_u32(nlh, IFLA_NET_NS_FD, (uint32_t)netns);
	mnl_attr_nest_end(nlh, peer);
	mnl_attr_nest_end(nlh, data);
	mnl_attr_nest_end(nlh, linkinfo);
	return nl_request(nl, nlh, seq);
}

int egress_link_delete(struct egress *e, const char *name)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = msg_start(buf, RTM_DELLINK, 0);
	struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
	return nl_request(e->nl, nlh, &e->seq);
}

int egress_conntrack_forget(struct egress *e, uint32_t addr)
{
	struct mnl_socket *nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
	if (!nl)
		return -errno;
	int r = 0;
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0)
		r = -errno;
	else {
		/* No tuple: the kernel deletes every entry whose mark matches. The ruleset's
		 * chain "remember" set the mark from the packet's source address bytes as they
		 * are (network order in a host-order word); CTA_MARK is read big-endian: so
		 * the address goes in host order, on either kind of host. */
		char buf[MNL_SOCKET_BUFFER_SIZE];
		struct nlmsghdr *nlh =
		    msg_start(buf, (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE, 0);
		struct nfgenmsg *g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));
		g->nfgen_family = AF_INET;
		g->version = NFNETLINK_V0;
		mnl_attr_put_u32(nlh, CTA_MARK, addr);
		mnl_attr_put_u32(nlh, CTA_MARK_MASK, htonl(0xffffffffu));
		r = nl_request(nl, nlh, &e->seq);
	}
	mnl_socket_close(nl);
	return r == -ENOENT ? 0 : r;
}

/* The sandbox's side, through a NETLINK_ROUTE socket made in its namespace. */
static int sandbox_side(struct rt_sandbox *sb, uint32_t addr, uint32_t gw, struct sk_error *err)
{
	int fd;
	int r = rt_sandbox_socket(sb, AF_NETLINK, SOCK_RAW, NETLINK_ROUTE, &fd, err);
	if (r < 0)
		return r;
	struct mnl_socket *nl = mnl_socket_fdopen(fd);
	if (!nl) {
		r = -errno;
		close(fd);
		return sk_error_errno(err, r, "netlink in the sandbox");
	}
	unsigned seq = (unsigned)time(NULL);
	if ((r = link_up(nl, &seq, SANDBOX_ETH0_IFINDEX)) < 0)
		sk_error_errno(err, r, "bring the sandbox's eth0 up");
	else if ((r = addr_add(nl, &seq, SANDBOX_ETH0_IFINDEX, addr)) < 0)
		sk_error_errno(err, r, "address the sandbox's eth0");
	else if ((r = route_add(nl, &seq, SANDBOX_ETH0_IFINDEX, 0, 0, gw)) < 0)
		sk_error_errno(err, r, "the sandbox's default route");
	mnl_socket_close(nl);
	return r;
}

/* The host end answers ARP for the gateway only (arp_ignore 1: addresses of the link asked
 * on), not for every host address, which would list them to the sandbox; and has no IPv6 (a
 * link-local address, router and neighbour traffic the sandbox could see or answer). */
static int host_end_quiet(const char *name, struct sk_error *err)
{
	static const char *const SETTINGS[][2] = {
	    {"/proc/sys/net/ipv4/conf/%s/arp_ignore", "1"},
	    {"/proc/sys/net/ipv4/conf/%s/arp_announce", "2"},
	    {"/proc/sys/net/ipv6/conf/%s/disable_ipv6", "1"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(SETTINGS); i++) {
		char path[96];
		snprintf(path, sizeof(path), SETTINGS[i][0], name);
		int r = fs_write_str_at(AT_FDCWD, path, SETTINGS[i][1]);
		/* A host without IPv6 has nothing to disable. */
		if (r == -ENOENT && strstr(path, "ipv6"))
			continue;
		if (r < 0)
			return sk_error_errno(err, r, "set %s", path);
	}
	return 0;
}

/* The host end: quiet, with the gateway address and the route to the sandbox. */
static int host_end_setup(struct egress *e, const char *name, uint32_t addr, struct sk_error *err)
{
	int ifindex = (int)if_nametoindex(name);
	if (ifindex <= 0)
		return sk_error_errno(err, -errno, "find veth %s", name);
	int r = host_end_quiet(name, err);
	if (r < 0)
		return r;
	if ((r = addr_add(e->nl, &e->seq, ifindex, e->cfg.subnet + 1)) < 0)
		return sk_error_errno(err, r, "address veth %s", name);
	if ((r = route_add(e->nl, &e->seq, ifindex, addr, 32, 0)) < 0)
		return sk_error_errno(err, r, "route to the sandbox through %s", name);
	return 0;
}

int egress_link_create(struct egress *e, struct rt_sandbox *sb, const char *host_name,
                       uint32_t addr, struct sk_error *err)
{
	int netns;
	int r = rt_sandbox_netns_open(sb, &netns, err);
	if (r < 0)
		return r;
	r = veth_add(e->nl, &e->seq, host_name, netns);
	if (r == -EEXIST) {
		/* Left by a sandbox that held this slot before and whose namespace lives on
		 * somewhere: the slot is ours now. */
		egress_link_delete(e, host_name);
		r = veth_add(e->nl, &e->seq, host_name, netns);
	}
	close(netns);
	if (r < 0)
		return sk_error_errno(err, r, "make veth %s", host_name);
	if ((r = host_end_setup(e, host_name, addr, err)) == 0)
		r = sandbox_side(sb, addr, e->cfg.subnet + 1, err);
	if (r < 0)
		egress_link_delete(e, host_name);
	return r;
}

struct sweep {
	struct egress *e;
	char prefix[IFNAMSIZ];
	int (*keep)(int slot, void *);
	void *ud;
	char doomed[64][IFNAMSIZ];
	int ndoomed;
};

static int sweep_link(const struct nlmsghdr *nlh, void *data)
{
	struct sweep *s = data;
	struct nlattr *a;
	mnl_attr_for_each(a, nlh, sizeof(struct ifinfomsg))
	{
		if (mnl_attr_get_type(a) != IFLA_IFNAME ||
		    mnl_attr_validate(a, MNL_TYPE_STRING) < 0)
			continue;
		const char *name = mnl_attr_get_str(a);
		size_t plen = strlen(s->prefix);
		if (strncmp(name, s->prefix, plen) != 0 || !name[plen])
			continue;
		char *end;
		long slot = strtol(name + plen, &end, 16);
		if (*end || slot < 0 || s->keep((int)slot, s->ud) ||
		    s->ndoomed == (int)ARRAY_SIZE(s->doomed))
			continue;
		snprintf(s->doomed[s->ndoomed++], IFNAMSIZ, "%s", name);
	}
	return MNL_CB_OK;
}

int egress_links_sweep(struct egress *e, int (*keep)(int slot, void *), void *ud)
{
	struct sweep *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->e = e;
	s->keep = keep;
	s->ud = ud;
	snprintf(s->prefix, sizeof(s->prefix), EGRESS_LINK_PREFIX_FMT, e->rt->instance);
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = msg_start(buf, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP);
	struct rtgenmsg *g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));
	g->rtgen_family = AF_PACKET;
	nlh->nlmsg_seq = ++e->seq;
	int r = 0;
	if (mnl_socket_sendto(e->nl, nlh, nlh->nlmsg_len) < 0) {
		r = -errno;
		goto out;
	}
	ssize_t n;
	while ((n = mnl_socket_recvfrom(e->nl, buf, sizeof(buf))) > 0) {
		r = mnl_cb_run(buf, (size_t)n, e->seq, 0, sweep_link, s);
		if (r <= MNL_CB_STOP)
			break;
	}
	if (r < 0) {
		r = -errno;
		goto out;
	}
	/* Deleted after the dump: a request in the middle of one would mix their answers. */
	r = 0;
	for (int i = 0; i < s->ndoomed; i++)
		if (egress_link_delete(e, s->doomed[i]) == 0)
			r++;
out:
	free(s);
	return r;
}
