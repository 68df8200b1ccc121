/* Unit tests for src/net: configuration (subnet, resolvers), addresses from uid slots, and the
 * instance's nftables ruleset (checked as text: applying it needs root and is the integration
 * tests' job). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "../../src/net/net.h"
#include "../../src/runtime/idmap.h"

static void test_subnet(void **state)
{
	(void)state;
	struct egress_config c;
	struct sk_error err = {0};
	egress_config_init(&c);
	assert_int_equal(c.subnet, 0x0ac90000u); /* 10.201.0.0 */
	assert_int_equal(c.prefix, 16);
	assert_int_equal(egress_config_set_subnet(&c, "172.20.0.0/15", &err), 0);
	assert_int_equal(c.prefix, 15);
	assert_true(egress_config_set_subnet(&c, "172.20.0.0/24", &err) < 0);
	assert_non_null(strstr(err.msg, "too small"));
	assert_true(egress_config_set_subnet(&c, "198.51.0.0/16", &err) < 0);
	assert_non_null(strstr(err.msg, "must lie in a private range"));
	assert_true(egress_config_set_subnet(&c, "10.201.0.1/16", &err) < 0);
	assert_non_null(strstr(err.msg, "host bits set"));
	assert_true(egress_config_set_subnet(&c, "10.201.0.0", &err) < 0);
	assert_true(egress_config_set_subnet(&c, "bogus/16", &err) < 0);
	/* A refused value leaves the last good one. */
	assert_int_equal(c.subnet, 0xac140000u);
}

static void test_addresses(void **state)
{
	(void)state;
	struct egress_config c;
	egress_config_init(&c);
	char buf[16];
	egress_addr_format(egress_addr(&c, 0), buf, sizeof(buf));
	assert_string_equal(buf, "10.201.0.2"); /* .0 the network, .1 the gateway */
	egress_addr_format(egress_addr(&c, IDMAP_SLOTS - 1), buf, sizeof(buf));
	assert_string_equal(buf, "10.201.64.1");
	assert_int_equal(egress_addr(&c, -1), 0);
	/* The largest subnet allowed holds every slot. */
	struct sk_error err;
	assert_int_equal(egress_config_set_subnet(&c, "10.9.0.0/17", &err), 0);
	assert_true(egress_addr(&c, IDMAP_SLOTS - 1) != 0);
}

static void test_dns(void **state)
{
	(void)state;
	struct egress_config c;
	struct sk_error err = {0};
	int skipped;
	egress_config_init(&c);
	assert_int_equal(egress_config_dns_from_resolv_conf(&c,
	                                                    "# x\nsearch example\n"
	                                                    "nameserver 127.0.0.53\n"
	                                                    "nameserver 10.255.255.53\n"
	                                                    "nameserver fd00::1\n"
	                                                    "nameserver 10.255.255.53\n",
	                                                    &skipped),
	                 1);
	assert_int_equal(skipped, 1);
	assert_int_equal(c.ndns, 1);
	egress_config_init(&c);
	assert_int_equal(
	    egress_config_dns_from_resolv_conf(&c, "nameserver 127.0.0.53\n", &skipped), 0);
	assert_int_equal(skipped, 1);
	assert_true(egress_config_add_dns(&c, "127.0.0.1", &err) < 0);
	assert_non_null(strstr(err.msg, "loopback"));
	assert_true(egress_config_add_dns(&c, "resolver.example", &err) < 0);
	assert_int_equal(egress_config_add_dns(&c, "198.51.100.1", &err), 0);
	assert_int_equal(egress_config_add_dns(&c, "198.51.100.2", &err), 0);
	assert_int_equal(egress_config_add_dns(&c, "198.51.100.3", &err), 0);
	assert_true(egress_config_add_dns(&c, "198.51.100.4", &err) < 0);
	assert_non_null(strstr(err.msg, "at most 3"));
}

static void test_ruleset(void **state)
{
	(void)state;
	struct egress_config c;
	struct sk_error err;
	egress_config_init(&c);
	egress_config_add_dns(&c, "10.255.255.53", &err);
	c.control_plane = 0xcb007107u; /* 203.0.113.7 */
	char buf[8192];
	assert_true(egress_ruleset_format(&c, "ab1", buf, sizeof(buf)) > 0);
	/* Replaces the table in one transaction, named for the instance only. */
	assert_memory_equal(buf, "add table inet skiff_ab1\ndelete table inet skiff_ab1\n", 50);
	static const char *const want[] = {
	    "elements = { 10.255.255.53 }",
	    "10.201.0.0/16, 203.0.113.7 }",
	    "iifname \"skab1-e*\" fib saddr . iif oif missing drop",
	    "iifname \"skab1-e*\" meta nfproto ipv6 drop",
	    "iifname \"skab1-e*\" drop",
	    "oifname \"skab1-e*\" ct state established,related accept",
	    "udp dport 53 drop",
	    "ip daddr @blocked drop",
	    "ip saddr . ip daddr @allow return",
	    "ip saddr 10.201.0.0/16 oifname != \"skab1-e*\" masquerade",
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (!strstr(buf, want[i]))
			fail_msg("ruleset lacks '%s':\n%s", want[i], buf);
	/* DNS to the resolvers comes before the blocked ranges (the resolver may be private). */
	assert_true(strstr(buf, "jump to_resolver\n\t\tudp") < strstr(buf, "@blocked drop"));
	assert_true(egress_ruleset_format(&c, "ab1", buf, 100) < 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_subnet),
	    cmocka_unit_test(test_addresses),
	    cmocka_unit_test(test_dns),
	    cmocka_unit_test(test_ruleset),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
