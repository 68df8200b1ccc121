"""GET /metrics: Prometheus text format that parses, and numbers that move with what happens."""

import re

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
                  r',?)*)\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(d):
    s, headers, raw = d.raw("GET", "/metrics", None, {"Authorization": f"Bearer {d.token}"})
    assert s == 200 and headers["Content-Type"].startswith("text/plain")
    samples, types = {}, {}
    for line in raw.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram"), line
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = LINE.match(line)
        assert m, f"not Prometheus text: {line!r}"
        labels = tuple(sorted(LABEL.findall(m.group(3) or "")))
        key = (m.group(1), labels)
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(m.group(4))
    return samples, types


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_an_admin_token(skiffd):
    # They count every workspace's sandboxes and requests: an admin's to read.
    assert skiffd.raw("GET", "/metrics")[0] == 401
    s, t = skiffd.api("POST", "/v1/tokens", {"name": "m", "role": "owner"})
    assert skiffd.raw("GET", "/metrics", None, {"Authorization": f"Bearer {t['secret']}"})[0] \
        == 403


def test_metrics_parse_and_move(skiffd):
    before, types = scrape(skiffd)
    assert types["skiff_http_requests_total"] == "counter"
    assert types["skiff_http_request_duration_seconds"] == "histogram"
    assert types["skiff_sandboxes"] == "gauge"
    assert types["skiff_sandbox_start_seconds"] == "histogram"
    assert value(before, "skiff_workers_connected") >= 1

    s, sb = skiffd.api("POST", "/v1/sandboxes", {})
    assert s == 201
    s, _ = skiffd.api("GET", "/v1/sandboxes/sb-00000000000000000000000000")
    assert s == 404
    for _ in range(3):
        assert skiffd.raw("GET", "/v1/no-such-route")[0] == 404
    after, _ = scrape(skiffd)
    assert value(after, "skiff_http_requests_total", route="unmatched", status="404") >= \
        value(before, "skiff_http_requests_total", route="unmatched", status="404") + 3
    route = "POST /v1/sandboxes"
    assert value(after, "skiff_http_requests_total", route=route, status="201") == \
        value(before, "skiff_http_requests_total", route=route, status="201") + 1
    assert value(after, "skiff_http_requests_total", route="GET /v1/sandboxes/{}",
                 status="404") >= 1
    assert value(after, "skiff_sandboxes", state="running") >= 1
    assert value(after, "skiff_sandbox_start_seconds_count") == \
        value(before, "skiff_sandbox_start_seconds_count") + 1

    # Histograms: cumulative buckets, +Inf equal to the count, a sum that is not negative.
    for name in ("skiff_sandbox_start_seconds", "skiff_http_request_duration_seconds"):
        groups = {}
        for (n, labels), v in after.items():
            if n == name + "_bucket":
                rest = tuple(l for l in labels if l[0] != "le")
                le = dict(labels)["le"]
                groups.setdefault(rest, []).append((float("inf") if le == "+Inf" else
                                                    float(le), v))
        assert groups, name
        for rest, buckets in groups.items():
            buckets.sort()
            counts = [v for _, v in buckets]
            assert counts == sorted(counts), (name, rest, buckets)
            assert buckets[-1][0] == float("inf")
            assert buckets[-1][1] == after[(name + "_count", rest)]
            assert after[(name + "_sum", rest)] >= 0
    skiffd.api("DELETE", f"/v1/sandboxes/{sb['id']}")
