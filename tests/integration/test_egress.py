"""Network egress end to end, through a skiffd of its own.

The "internet" is a network namespace the tests make (its name and its veth carry the test
instance id), joined to the host by a veth: it holds public test addresses (198.51.100.N allowed,
203.0.113.N another) and addresses standing for private and link-local ranges. The host routes
exactly those /32s to it, so a packet a rule failed to stop would arrive there (its listeners
record what arrived) and never at the uplink. Resolvers are test addresses too: the host's own
resolver is never used.
"""

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from conftest import (REPO, SKIFF, SKIFF_BOX, Box, Skiffd, end_instance, free_test_octet,
                      instance_net_links, kill_all, new_instance, nft_run, nft_table, netns_hosts,
                      wait_for)

PROBE = Path(os.environ.get("SKIFF_PROBE", str(REPO / "build" / "tests" / "skiff-probe")))
# The test hosts' last octet: apart from other runs on the host.
N = free_test_octet(["198.51.100", "203.0.113", "10.250.7", "172.31.7", "192.168.250",
                     "169.254.7"], 3)
INTERNET = f"198.51.100.{N}"
OTHER = f"203.0.113.{N}"
PRIVATE = [f"10.250.7.{N}", f"172.31.7.{N}", f"192.168.250.{N}", f"169.254.7.{N}"]
RESOLVER = f"198.51.100.{N + 1}"
OTHER_RESOLVER = f"203.0.113.{N + 1}"
HOST_END = f"198.51.100.{N + 2}"  # the host's end of the test veth
TEST_ADDRS = [INTERNET, OTHER, RESOLVER, OTHER_RESOLVER] + PRIVATE
HTTP_PORT = 8080
ANSWER = "198.51.100.99"  # what the test resolver answers for every name

# The test hosts' listeners: TCP on every address (answers HTTP, logs "tcp LOCAL PEER"), UDP
# per address (logs "udp LOCAL PEER DATA"; on port 53 answers any A query with ANSWER).
LISTENER = r"""
import socket, sys, threading
log = open(sys.argv[1], "a", buffering=1)
addrs = sys.argv[2].split(",")
answer = socket.inet_aton(sys.argv[3])
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", %d)); s.listen(64)
    while True:
        c, peer = s.accept()
        log.write("tcp %%s %%s\n" %% (c.getsockname()[0], peer[0]))
        try:
            c.settimeout(2); c.recv(4096)
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nhello-egress")
        except OSError:
            pass
        c.close()
def udp(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((addr, port))
    while True:
        data, peer = s.recvfrom(2048)
        log.write("udp %%s:%%d %%s %%r\n" %% (addr, port, peer[0], data[:16]))
        if port == 53 and len(data) > 12:
            q = data[12:]; end = q.index(b"\0") + 5
            s.sendto(data[:2] + b"\x81\x80" + data[4:6] + b"\x00\x01\x00\x00\x00\x00" + q[:end]
                     + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + answer, peer)
for a in addrs:
    for p in (53, 9999):
        threading.Thread(target=udp, args=(a, p), daemon=True).start()
threading.Thread(target=tcp, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
""" % HTTP_PORT


def sh(*argv, check=True):
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


class Nft:
    """The nftables state, read through libnftables (conftest.nft_run)."""

    def __init__(self):
        if nft_run("list tables")[0] is None:
            pytest.skip("libnftables.so.1 is missing (apt install libnftables1)")

    def run(self, cmd):
        return nft_run(cmd)

    def table(self, inst):
        return nft_table(inst)


def instance_links(inst):
    return instance_net_links(inst)


@pytest.fixture(scope="module")
def internet(tmp_path_factory):
    """The test hosts: a namespace with listeners; removed at the end, failed or not."""
    log = tmp_path_factory.mktemp("internet") / "arrived.log"
    log.write_text("")
    with netns_hosts(TEST_ADDRS, HOST_END) as net:
        proc = subprocess.Popen(["ip", "netns", "exec", net["ns"], sys.executable, "-c",
                                 LISTENER, str(log), ",".join(TEST_ADDRS), ANSWER],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            yield {**net, "log": log}
        finally:
            proc.kill()
            proc.wait()


def arrived(internet):
    return internet["log"].read_text().splitlines()


@pytest.fixture(scope="module")
def egressd(tmp_path_factory, internet):
    """A skiffd whose egress sandboxes resolve through the test resolver."""
    for b in (SKIFF_BOX, PROBE):
        if not b.is_file():
            pytest.fail(f"{b} is missing: build it with `make`", pytrace=False)
    nft = Nft()  # before skiffd starts: a skip after it would leave skiffd running
    d = Skiffd(tmp_path_factory.mktemp("egressd") / "data", new_instance("g"), _port())
    d.start(pool=0, extra=["--dns", RESOLVER])
    yield d
    try:
        d.cleanup_sandboxes()
    except OSError:
        pass
    rc = d.stop()
    box = Box(SKIFF_BOX, d.instance, d.data)
    kill_all(box)
    end_instance(box)
    assert rc == 0, d.log_text()[-3000:]
    assert wait_for(lambda: not instance_links(d.instance), 5), instance_links(d.instance)
    assert nft.table(d.instance) is None, "the instance's nftables table is left"


def _port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create(d, **body):
    body.setdefault("network", "egress")
    s, sb = d.api("POST", "/v1/sandboxes", body)
    assert s == 201, sb
    return sb


def run(d, sb, script, timeout=20):
    s, r = d.api("POST", f"/v1/sandboxes/{sb['id']}/exec?wait=true",
                 {"command": ["sh", "-c", script], "timeout_s": timeout})
    assert s == 200, r
    return r


def delete(d, sb):
    d.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    d.deleted.add(sb["id"])


def fetch(d, sb, addr):
    """HTTP from the sandbox (busybox nc: the static busybox's wget can't resolve even a
    literal without NSS): the body, or "" when it could not connect."""
    r = run(d, sb, f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {addr} {HTTP_PORT} 2>&1; true")
    out = r["stdout"]
    return out.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in out else ""


def sandbox_addr(d, sb):
    out = run(d, sb, "ip -4 -o addr show dev eth0")["stdout"]
    m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/32", out)
    assert m, out
    return m.group(1)


def put_probe(d, sb):
    q = urllib.parse.quote("/bin/probe")
    s, _, raw = d.raw("PUT", f"/v1/sandboxes/{sb['id']}/files?path={q}&mode=755",
                      PROBE.read_bytes(), {"Authorization": f"Bearer {d.token}"})
    assert s in (200, 201, 204), raw


# ---- tests ----


def test_egress_reaches_a_public_host(egressd, internet):
    sb = create(egressd)
    try:
        assert fetch(egressd, sb, INTERNET) == "hello-egress"
        addr = sandbox_addr(egressd, sb)
        assert addr.startswith("10.201."), addr
        # Masqueraded: the test host sees the host's address, never the sandbox's.
        tcp = [l for l in arrived(internet) if l.startswith(f"tcp {INTERNET} ")]
        assert tcp and all(addr not in l for l in tcp), tcp
        assert instance_links(egressd.instance), "no host link for the sandbox"
        assert "nameserver " + RESOLVER in run(egressd, sb, "cat /etc/resolv.conf")["stdout"]
    finally:
        delete(egressd, sb)
    # The host link goes with the sandbox.
    assert wait_for(lambda: not instance_links(egressd.instance), 5)


def test_allowlist_narrows(egressd, internet):
    sb = create(egressd, cidr_allowlist=["198.51.100.0/24"])
    try:
        assert egressd.api("GET", f"/v1/sandboxes/{sb['id']}")[1]["cidr_allowlist"] == [
            "198.51.100.0/24"]
        assert fetch(egressd, sb, INTERNET) == "hello-egress"
        before = len(arrived(internet))
        assert fetch(egressd, sb, OTHER) == ""
        assert not [l for l in arrived(internet)[before:] if OTHER in l]
        out = Nft().table(egressd.instance)
        assert "198.51.100.0/24" in out, out
    finally:
        delete(egressd, sb)
    # Its set elements go with it.
    assert wait_for(lambda: "198.51.100.0/24" not in (Nft().table(egressd.instance) or ""), 5)



def test_nested_allowlist_ranges_kept_once(egressd, internet):
    # An interval set refuses overlapping elements: nested ranges must not fail the start.
    sb = create(egressd, cidr_allowlist=["198.51.100.0/25", "198.51.100.0/24", INTERNET])
    try:
        assert egressd.api("GET", f"/v1/sandboxes/{sb['id']}")[1]["cidr_allowlist"] == [
            "198.51.100.0/24"]
        assert fetch(egressd, sb, INTERNET) == "hello-egress"
        assert fetch(egressd, sb, OTHER) == ""
    finally:
        delete(egressd, sb)


def refused(d, sb, internet, addrs):
    """None of addrs is reached from sb, and the test hosts saw nothing from it."""
    before = len(arrived(internet))
    got = {a: fetch(d, sb, a) for a in addrs}
    later = [l for l in arrived(internet)[before:] if any(a in l for a in addrs)]
    return not any(got.values()) and not later


def test_table_removed_from_outside_comes_back(egressd, internet):
    """A host firewall reload that flushes the whole ruleset takes the instance's table with
    it: the next start installs it again before its sandbox runs, and running sandboxes get it
    back within seconds, allowlists included."""
    nft = Nft()
    table = f"delete table inet skiff_{egressd.instance}"
    running = create(egressd, cidr_allowlist=["198.51.100.0/24"])
    try:
        assert fetch(egressd, running, INTERNET) == "hello-egress"
        assert nft.run(table)[0] == 0
        fresh = create(egressd)
        try:
            assert refused(egressd, fresh, internet, PRIVATE[:2])
            assert refused(egressd, running, internet, [OTHER, PRIVATE[0]])
            assert fetch(egressd, running, INTERNET) == "hello-egress"
        finally:
            delete(egressd, fresh)
        # With no start to notice it: the worker looks by itself.
        assert nft.run(table)[0] == 0
        assert wait_for(lambda: "198.51.100.0/24" in (nft.table(egressd.instance) or ""), 10)
        assert refused(egressd, running, internet, [OTHER, PRIVATE[0]])
        assert fetch(egressd, running, INTERNET) == "hello-egress"
    finally:
        delete(egressd, running)


def test_private_and_link_local_refused(egressd, internet):
    sb = create(egressd)
    try:
        before = len(arrived(internet))
        for a in PRIVATE:
            assert fetch(egressd, sb, a) == "", a
        # Listed or not, they stay blocked: an allowlist can only narrow.
        later = arrived(internet)[before:]
        assert not [l for l in later if any(a in l for a in PRIVATE)], later
    finally:
        delete(egressd, sb)


def test_host_services_refused(egressd, internet):
    import socket
    # A listener on every host address (the test veth's end among them) and the API port.
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 0))
    srv.listen(8)
    srv.settimeout(0.1)
    port = srv.getsockname()[1]
    sb = create(egressd)
    try:
        gw = run(egressd, sb, "ip route show default")["stdout"].split()[2]
        for addr, p in [(gw, port), (HOST_END, port), (gw, egressd.port),
                        (HOST_END, egressd.port), ("127.0.0.1", egressd.port)]:
            r = run(egressd, sb, f"nc -w 2 {addr} {p} </dev/null && echo CONNECTED; true")
            assert "CONNECTED" not in r["stdout"], (addr, p)
        with pytest.raises(socket.timeout):
            srv.accept()
    finally:
        srv.close()
        delete(egressd, sb)



def test_host_addresses_not_told_over_arp(egressd, internet):
    """The host end answers ARP for the gateway only: a sandbox can't list the host's other
    addresses by asking its link (HOST_END stands for any host address). No IPv6 on it either:
    nothing of the host's link-local addresses reaches the sandbox."""
    sb = create(egressd)
    try:
        gw = run(egressd, sb, "ip route show default")["stdout"].split()[2]
        r = run(egressd, sb, f"arping -c 1 -w 2 -I eth0 {gw}; echo; "
                             f"arping -c 1 -w 2 -I eth0 {HOST_END}; true")
        assert r["stdout"].count("Received 1 response") == 1, r
        assert "Received 0 response" in r["stdout"].split(HOST_END, 1)[1], r
        links = instance_links(egressd.instance)
        assert len(links) == 1, links
        assert sh("ip", "-6", "-o", "addr", "show", "dev", links[0]).stdout == ""
    finally:
        delete(egressd, sb)


def conntrack_of(addr):
    """The host's conntrack entries with addr as source."""
    try:
        lines = Path("/proc/net/nf_conntrack").read_text().splitlines()
    except OSError:
        pytest.skip("/proc/net/nf_conntrack is missing (CONFIG_NF_CONNTRACK_PROCFS)")
    return [l for l in lines if f" src={addr} " in l]


def test_connections_forgotten_at_the_end(egressd, internet):
    """A sandbox's conntrack entries go with it: replies still on their way (a UDP flow, a
    TCP stream for days) must never reach the next sandbox that gets its address."""
    sb = create(egressd)
    try:
        addr = sandbox_addr(egressd, sb)
        assert fetch(egressd, sb, INTERNET) == "hello-egress"
        run(egressd, sb, "nslookup example.test >/dev/null 2>&1; true")
        assert wait_for(lambda: len(conntrack_of(addr)) >= 2, 3), conntrack_of(addr)
    finally:
        delete(egressd, sb)
    assert wait_for(lambda: not conntrack_of(addr), 3), conntrack_of(addr)


def test_sandbox_to_sandbox_refused(egressd, internet):
    a = create(egressd)
    b = create(egressd)
    try:
        addr_a = sandbox_addr(egressd, a)
        s, _ = egressd.api("POST", f"/v1/sandboxes/{a['id']}/exec",
                           {"command": ["sh", "-c", "nc -l -p 7000 > /tmp/got"]})
        assert s in (200, 201, 202)
        r = run(egressd, b, f"echo hi | nc -w 2 {addr_a} 7000 && echo SENT; "
                            f"ping -c 1 -W 1 {addr_a} >/dev/null && echo PINGED; true")
        assert "SENT" not in r["stdout"] and "PINGED" not in r["stdout"], r
        assert run(egressd, a, "cat /tmp/got 2>/dev/null; true")["stdout"] == ""
    finally:
        delete(egressd, a)
        delete(egressd, b)


def test_spoofed_source_dropped(egressd, internet):
    a = create(egressd)
    b = create(egressd)
    try:
        put_probe(egressd, a)
        addr_a, addr_b = sandbox_addr(egressd, a), sandbox_addr(egressd, b)
        # Its own address goes through (so the probe works), forged ones never arrive.
        for src in (addr_a, addr_b, OTHER):
            r = run(egressd, a, f"probe spoof-udp {src} {INTERNET} 9999")
            assert r["stdout"].strip() == "ok", r
        wait_for(lambda: any("9999" in l for l in arrived(internet)), 3)
        got = [l for l in arrived(internet) if f"{INTERNET}:9999" in l]
        assert len(got) == 1 and HOST_END in got[0], got
        # Nor can it take another address.
        r = run(egressd, a, f"ip addr add {addr_b}/32 dev eth0 2>&1; echo rc=$?")
        assert "rc=0" not in r["stdout"], r
    finally:
        delete(egressd, a)
        delete(egressd, b)


def test_dns_only_through_the_allowed_resolver(egressd, internet):
    sb = create(egressd)
    try:
        r = run(egressd, sb, "nslookup example.test 2>&1; true")
        assert ANSWER in r["stdout"], r
        before = len(arrived(internet))
        r = run(egressd, sb, f"timeout 5 nslookup example.test {OTHER_RESOLVER} 2>&1; true")
        assert ANSWER not in r["stdout"], r
        assert not [l for l in arrived(internet)[before:] if OTHER_RESOLVER in l]
    finally:
        delete(egressd, sb)


def test_network_none_has_only_loopback(egressd):
    sb = create(egressd, network="none")
    try:
        out = run(egressd, sb, "ls /sys/class/net")["stdout"].split()
        assert out == ["lo"], out
    finally:
        delete(egressd, sb)


@pytest.mark.parametrize("body,msg", [
    ({"network": "egress", "cidr_allowlist": ["300.1.1.0/24"]}, "is not an IPv4 range"),
    ({"network": "egress", "cidr_allowlist": ["10.0.0.0/8"]}, "lies in 10.0.0.0/8"),
    ({"network": "egress", "cidr_allowlist": ["169.254.169.254"]}, "lies in 169.254.0.0/16"),
    ({"network": "egress", "cidr_allowlist": [f"198.51.{i}.0/24" for i in range(65)]},
     "at most 64"),
    ({"network": "none", "cidr_allowlist": ["198.51.100.0/24"]}, "needs network"),
])
def test_bad_allowlists(egressd, body, msg):
    before = egressd.api("GET", "/v1/sandboxes?limit=1000")[1]["items"]
    s, r = egressd.api("POST", "/v1/sandboxes", body)
    assert s == 400 and msg in r["error"]["message"], r
    assert egressd.api("GET", "/v1/sandboxes?limit=1000")[1]["items"] == before


def test_skiff_box_refuses_egress_clearly():
    r = subprocess.run([str(SKIFF_BOX), "--network", "egress", "--", "true"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "needs skiffd" in r.stderr, r.stderr


def box_ls(box):
    r = subprocess.run([str(SKIFF_BOX), "ls", "--instance", box.instance, "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_crash_cleanup(tmp_path, internet):
    """kill -9 of skiffd: a restart rebuilds the table with the elements of the sandboxes that
    still run and without those of the ones that ended meanwhile; gc, once nothing of the
    instance runs, removes links and table."""
    nft = Nft()
    d = Skiffd(tmp_path / "data", new_instance("c"), _port())
    d.start(pool=0, extra=["--dns", RESOLVER])
    box = Box(SKIFF_BOX, d.instance, d.data)
    try:
        create(d, cidr_allowlist=["203.0.113.0/24"], command=["sleep", "300"])
        create(d, cidr_allowlist=["198.51.100.0/24"])
        assert len(instance_links(d.instance)) == 2
        d.proc.kill()
        d.proc.wait()
        d.log.close()
        # One ends while no skiffd runs: its allowlist stays in the table, stale.
        dying = [sb for sb in box_ls(box) if "sleep" in sb.get("command", "")]
        assert len(dying) == 1, box_ls(box)
        subprocess.run([str(SKIFF_BOX), "kill", "--instance", d.instance, dying[0]["id"]],
                       capture_output=True, timeout=60)
        assert "203.0.113.0/24" in nft.table(d.instance)
        d.start(pool=0, extra=["--dns", RESOLVER])
        table = nft.table(d.instance)
        assert "203.0.113.0/24" not in table and "198.51.100.0/24" in table, table
        assert wait_for(lambda: len(instance_links(d.instance)) == 1, 5)
        d.proc.kill()
        d.proc.wait()
        d.log.close()
        kill_all(box)
        box.gc()
        assert wait_for(lambda: not instance_links(d.instance), 5), instance_links(d.instance)
        assert nft.table(d.instance) is None, "gc left the table"
    finally:
        if d.proc and d.proc.poll() is None:
            d.stop()
        kill_all(box)
        end_instance(box)



def test_restart_never_unfiltered(tmp_path, internet):
    """A skiffd that starts again while egress sandboxes run never leaves one's link without
    the table or without its allowlist: the table gone meanwhile is made again, and a sandbox
    whose record can't be read whole loses its link rather than its limits."""
    nft = Nft()
    d = Skiffd(tmp_path / "data", new_instance("r"), _port())
    d.start(pool=0, extra=["--dns", RESOLVER])
    box = Box(SKIFF_BOX, d.instance, d.data)
    try:
        kept = create(d, cidr_allowlist=["198.51.100.0/24"], command=["sleep", "300"])
        cut = create(d, cidr_allowlist=["198.51.100.0/24"], command=["sleep", "301"])
        assert len(instance_links(d.instance)) == 2
        d.proc.kill()
        d.proc.wait()
        d.log.close()
        # Gone while no skiffd ran (a host firewall reload), and a record read short.
        assert nft.run(f"delete table inet skiff_{d.instance}")[0] == 0
        cut_id = [sb["id"] for sb in box_ls(box) if "301" in sb.get("command", "")]
        assert len(cut_id) == 1, box_ls(box)
        record = Path("/run/skiff") / d.instance / cut_id[0] / "egress"
        record.write_text(record.read_text().split("allow")[0])
        d.start(pool=0, extra=["--dns", RESOLVER])
        assert "198.51.100.0/24" in (nft.table(d.instance) or "")
        assert refused(d, kept, internet, [OTHER, PRIVATE[0]])
        assert fetch(d, kept, INTERNET) == "hello-egress"
        assert refused(d, cut, internet, [OTHER, PRIVATE[0], INTERNET])
        assert len(instance_links(d.instance)) == 1
    finally:
        if d.proc and d.proc.poll() is None:
            d.cleanup_sandboxes()
            d.stop()
        kill_all(box)
        end_instance(box)
    assert wait_for(lambda: not instance_links(d.instance), 5), instance_links(d.instance)
    assert nft.table(d.instance) is None


def test_two_instances_at_once(tmp_path, internet):
    """Two skiffd with egress side by side: each filters its own sandboxes, neither reaches
    the other's, and the end of one leaves the other's table, links and sandboxes working."""
    nft = Nft()
    ds, boxes = [], []
    try:
        for k in ("a", "b"):
            d = Skiffd(tmp_path / f"data-{k}", new_instance(k), _port())
            ds.append(d)
            d.start(pool=0, extra=["--dns", RESOLVER])
            boxes.append(Box(SKIFF_BOX, d.instance, d.data))
        a = create(ds[0], cidr_allowlist=["198.51.100.0/24"])
        b = create(ds[1], cidr_allowlist=["203.0.113.0/24"])
        assert fetch(ds[0], a, INTERNET) == "hello-egress"
        assert fetch(ds[1], b, OTHER) == "hello-egress"
        assert refused(ds[0], a, internet, [OTHER])
        assert refused(ds[1], b, internet, [INTERNET])
        addr_a, addr_b = sandbox_addr(ds[0], a), sandbox_addr(ds[1], b)
        assert addr_a != addr_b
        s, _ = ds[0].api("POST", f"/v1/sandboxes/{a['id']}/exec",
                         {"command": ["sh", "-c", "nc -l -p 7000 > /tmp/got"]})
        assert s in (200, 201, 202)
        r = run(ds[1], b, f"echo hi | nc -w 2 {addr_a} 7000 && echo SENT; "
                          f"ping -c 1 -W 1 {addr_a} >/dev/null && echo PINGED; true")
        assert "SENT" not in r["stdout"] and "PINGED" not in r["stdout"], r
        assert run(ds[0], a, "cat /tmp/got 2>/dev/null; true")["stdout"] == ""
        # The first instance ends; the second carries on as it was.
        ds[0].cleanup_sandboxes()
        assert ds[0].stop() == 0, ds[0].log_text()[-3000:]
        kill_all(boxes[0])
        end_instance(boxes[0])
        assert wait_for(lambda: not instance_links(ds[0].instance), 5)
        assert nft.table(ds[0].instance) is None
        assert "203.0.113.0/24" in (nft.table(ds[1].instance) or "")
        assert len(instance_links(ds[1].instance)) == 1
        assert fetch(ds[1], b, OTHER) == "hello-egress"
        assert refused(ds[1], b, internet, [INTERNET, PRIVATE[0]])
    finally:
        for d, box in zip(ds, boxes):
            if d.proc and d.proc.poll() is None:
                try:
                    d.cleanup_sandboxes()
                except OSError:
                    pass
                d.stop()
            kill_all(box)
            end_instance(box)


def test_cli_network_and_allow(egressd, internet, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKIFF_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path), SKIFF_URL=egressd.url, SKIFF_TOKEN=egressd.token)
    script = (f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {INTERNET} {HTTP_PORT}; "
              f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {OTHER} {HTTP_PORT}; true")
    p = subprocess.run([str(SKIFF), "sandbox", "run", "--network", "egress", "--allow",
                        "198.51.100.0/24", "--", "sh", "-c", script],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("hello-egress") == 1, p.stdout
    p = subprocess.run([str(SKIFF), "sandbox", "run", "--allow", "10.0.0.0/8", "--", "true"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "lies in 10.0.0.0/8" in p.stderr, p.stderr
    p = subprocess.run([str(SKIFF), "sandbox", "run", "--network", "bridge", "--", "true"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "expected none or egress" in p.stderr, p.stderr
    egressd.cleanup_sandboxes()


def test_sdk_network_and_allowlist(egressd, internet):
    sys.path.insert(0, str(REPO / "sdk" / "python"))
    import skiff
    c = skiff.Client(egressd.url, egressd.token)
    sb = skiff.Sandbox.create(network="egress", cidr_allowlist=["198.51.100.0/24"], client=c)
    try:
        r = sb.exec("sh", "-c", f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | "
                                f"nc -w 3 {INTERNET} {HTTP_PORT}")
        assert b"hello-egress" in r.stdout
        with pytest.raises(skiff.InvalidArgument, match="lies in 192.168.0.0/16"):
            skiff.Sandbox.create(network="egress", cidr_allowlist=["192.168.0.0/16"], client=c)
    finally:
        sb.terminate()
        egressd.deleted.discard(sb.id)
        egressd.cleanup_sandboxes()
