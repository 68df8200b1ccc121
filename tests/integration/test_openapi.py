"""docs/openapi.yaml against the server: its routes are exactly `skiffd routes` (less the
operations marked `x-skiff-planned: true`, which must not be served yet), and a few live replies
of `skiffd dev` match the schemas documented for them. A route of any method (`*`) is documented
as every method but HEAD and TRACE; its final `{*}` (the rest of the path) as a parameter."""

import re
import subprocess

import pytest

from conftest import REPO, SKIFFD

DOC_PATH = REPO / "docs" / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
PLANNED = "x-skiff-planned"
ANY_METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS")


@pytest.fixture(scope="module")
def doc():
    try:
        import yaml
    except ImportError:
        pytest.fail("PyYAML is missing: apt-get install python3-yaml (scripts/install-deps)",
                    pytrace=False)
    with open(DOC_PATH) as f:
        return yaml.safe_load(f)


def operations(doc):
    """(METHOD, path as written, operation) for every operation of the document."""
    for path, item in doc["paths"].items():
        for m in METHODS:
            if m in item:
                yield m.upper(), path, item[m]


def normalized(path):
    return re.sub(r"\{[^}/]*\}", "{}", path)


def server_routes():
    if not SKIFFD.is_file():
        pytest.fail(f"{SKIFFD} is missing: build it with `make` (or set SKIFF_BIN)",
                    pytrace=False)
    r = subprocess.run([str(SKIFFD), "routes"], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"skiffd routes failed ({r.returncode}): {r.stderr}"
    routes = set()
    for line in r.stdout.splitlines():
        if not line.strip():
            continue
        method, pattern = line.split()
        pattern = pattern.replace("{*}", "{}")
        for m in ANY_METHODS if method == "*" else (method,):
            if m != "HEAD":  # served wherever GET is; not listed separately
                routes.add((m, pattern))
    assert routes, "skiffd routes printed nothing"
    return routes


def test_documented_routes_are_the_servers(doc):
    served = server_routes()
    documented, planned = set(), set()
    for method, path, op in operations(doc):
        (planned if op.get(PLANNED) else documented).add((method, normalized(path)))

    def lines(routes):
        return "".join(f"\n    {m} {p}" for m, p in sorted(routes, key=lambda r: (r[1], r[0])))

    problems = []
    if served - documented - planned:
        problems.append("served but not in docs/openapi.yaml:"
                        + lines(served - documented - planned))
    if documented - served:
        problems.append("in docs/openapi.yaml but not served (mark them x-skiff-planned: true "
                        "if they are still to come):" + lines(documented - served))
    if planned & served:
        problems.append("served now but still marked x-skiff-planned in docs/openapi.yaml "
                        "(remove the mark, check the schemas):" + lines(planned & served))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def resolve(doc, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), f"only local $refs: {ref}"
        node = doc
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def walk_refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for v in node.values():
            yield from walk_refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk_refs(v)


def nulls(node, where="$"):
    """Where a YAML value came out null: in this document that is a slip (such as an unquoted
    ', ' in a flow mapping), except for a default or an example."""
    if isinstance(node, dict):
        for k, v in node.items():
            if v is None and k not in ("default", "example"):
                yield f"{where}.{k}"
            yield from nulls(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from nulls(v, f"{where}[{i}]")


def test_document_is_consistent(doc):
    assert doc["openapi"] == "3.0.3"
    problems = [f"{w}: null (quote the text before it?)" for w in nulls(doc)]
    for ref in set(walk_refs(doc)):
        try:
            resolve(doc, {"$ref": ref})
        except (KeyError, TypeError, AssertionError):
            problems.append(f"unresolved $ref {ref}")
    ids = {}
    for method, path, op in operations(doc):
        where = f"{method} {path}"
        if op.get("operationId") in ids:
            problems.append(f"{where}: operationId {op.get('operationId')} used twice")
        ids[op.get("operationId")] = where
        declared = {resolve(doc, p)["name"] for p in doc["paths"][path].get("parameters", [])
                    + op.get("parameters", []) if resolve(doc, p)["in"] == "path"}
        if declared != set(re.findall(r"\{([^}/]*)\}", path)):
            problems.append(f"{where}: path parameters declared {sorted(declared)}")
        internal = path.startswith("/internal/")
        if internal != ("internal" in op.get("tags", [])):
            problems.append(f"{where}: the internal tag is for /internal/ routes, all of them")
        if internal and op.get("security") != [{"workerSecret": []}]:
            problems.append(f"{where}: an internal route takes the worker secret")
        responses = op.get("responses", {})
        if not any(s.startswith("2") or s == "101" for s in responses):  # 101: upgraded
            problems.append(f"{where}: no success response")
        for status, resp in responses.items():
            if int(status) < 400:
                continue
            schema = resolve(doc, resolve(doc, resp)["content"]["application/json"]["schema"])
            if schema is not doc["components"]["schemas"]["Error"]:
                problems.append(f"{where}: {status} is not the Error schema")
        if op.get("security") != [] and "401" not in responses:
            problems.append(f"{where}: authenticated but no 401")
    if problems:
        pytest.fail("docs/openapi.yaml:\n" + "\n".join(problems), pytrace=False)


# ---- live replies against the schemas ----

TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def check(doc, value, schema, where="$"):
    """What is wrong with value under schema, as readable lines: the part of OpenAPI 3.0 that
    docs/openapi.yaml uses (type, nullable, enum, pattern, required, properties,
    additionalProperties, items, allOf)."""
    schema = resolve(doc, schema)
    if value is None:
        return [] if schema.get("nullable") else [f"{where}: null, not nullable"]
    errs = []
    for sub in schema.get("allOf", []):
        errs += check(doc, value, sub, where)
    t = schema.get("type")
    if t and not TYPES[t](value):
        return errs + [f"{where}: {value!r} is not of type {t}"]
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{where}: {value!r} not one of {schema['enum']}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        errs.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        errs += [f"{where}: required key {k!r} missing" for k in schema.get("required", [])
                 if k not in value]
        for k, v in value.items():
            if k in props:
                errs += check(doc, v, props[k], f"{where}.{k}")
            elif extra is False:
                errs.append(f"{where}: key {k!r} is not documented")
            elif isinstance(extra, dict):
                errs += check(doc, v, extra, f"{where}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            errs += check(doc, v, schema["items"], f"{where}[{i}]")
    return errs


class Checker:
    def __init__(self, doc, d):
        self.doc, self.d, self.problems = doc, d, []

    def call(self, method, path, template, body=None, token="", want=200):
        """One request; its status must be want and its body must match what the document
        says of that status. Returns the body."""
        s, reply = self.d.api(method, path, body, token=token)
        assert s == want, f"{method} {path}: {s} {reply}"
        op = self.doc["paths"].get(template, {}).get(method.lower())
        if op is None:
            self.problems.append(f"{method} {template}: not in the document")
            return reply
        resp = op["responses"].get(str(s))
        if resp is None:
            self.problems.append(f"{method} {template}: status {s} is not documented")
            return reply
        schema = resolve(self.doc, resp)["content"]["application/json"]["schema"]
        self.problems += check(self.doc, reply, schema, f"{method} {template} {s}")
        return reply


def test_live_replies_match_schemas(doc, skiffd):
    c = Checker(doc, skiffd)
    c.call("GET", "/healthz", "/healthz", token=None)
    me = c.call("GET", "/v1/whoami", "/v1/whoami")
    assert me["role"] == "admin"
    c.call("GET", "/v1/whoami", "/v1/whoami", token=None, want=401)
    c.call("GET", "/v1/workspaces", "/v1/workspaces")
    c.call("GET", "/v1/workers", "/v1/workers")

    sb = c.call("POST", "/v1/sandboxes", "/v1/sandboxes", {"tags": {"suite": "openapi"}},
                want=201)
    sid = sb["id"]
    try:
        assert sb["state"] == "running" and sb["exit_code"] is None, sb
        assert isinstance(sb["cpu"], float) and isinstance(sb["memory_mib"], int), sb
        got = c.call("GET", f"/v1/sandboxes/{sid}", "/v1/sandboxes/{id}")
        assert got["id"] == sid and got["tags"] == {"suite": "openapi"}, got
        page = c.call("GET", "/v1/sandboxes?tag=suite:openapi&limit=10", "/v1/sandboxes")
        assert sid in [x["id"] for x in page["items"]], page
        c.call("GET", "/v1/sandboxes/sb-00000000000000000000000000", "/v1/sandboxes/{id}",
               want=404)

        done = c.call("POST", f"/v1/sandboxes/{sid}/exec?wait=true", "/v1/sandboxes/{id}/exec",
                      {"command": ["sh", "-c", "echo out; echo err >&2; exit 3"]})
        assert (done["state"], done["exit_code"], done.get("stdout"), done.get("stderr"),
                done.get("truncated")) == ("exited", 3, "out\n", "err\n", False), done
        ex = c.call("POST", f"/v1/sandboxes/{sid}/exec", "/v1/sandboxes/{id}/exec",
                    {"command": ["true"]}, want=201)
        c.call("GET", f"/v1/sandboxes/{sid}/execs/{ex['id']}", "/v1/sandboxes/{id}/execs/{ex}")

        c.call("PATCH", f"/v1/sandboxes/{sid}", "/v1/sandboxes/{id}",
               {"tags": {"suite": "openapi", "k": "v"}})
        c.call("POST", f"/v1/sandboxes/{sid}/wait?timeout_s=0", "/v1/sandboxes/{id}/wait")
    finally:
        end = c.call("DELETE", f"/v1/sandboxes/{sid}", "/v1/sandboxes/{id}")
        skiffd.deleted.add(sid)
    assert end["state"] in ("terminated", "exited"), end
    assert isinstance(end["exit_code"], int) and isinstance(end["ended_at"], str), end

    tok = c.call("POST", "/v1/tokens", "/v1/tokens", {"name": "openapi-check", "role": "viewer"},
                 want=201)
    try:
        page = c.call("GET", "/v1/tokens?limit=1000", "/v1/tokens")
        assert tok["id"] in [t["id"] for t in page["items"]] or page["next_cursor"], page
        c.call("GET", "/v1/tokens", "/v1/tokens", token=tok["secret"], want=403)
    finally:
        c.call("DELETE", f"/v1/tokens/{tok['id']}", "/v1/tokens/{id}")
    if c.problems:
        pytest.fail("replies that differ from docs/openapi.yaml:\n" + "\n".join(c.problems),
                    pytrace=False)
