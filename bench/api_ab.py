#!/usr/bin/env python3
"""Two builds' REST cycles side by side, interleaved: on a shared, noisy machine, separate runs of
bench/api_cycle.py minutes apart see different loads; here both skiffd's run at once and every
round does the same work on each, in alternating order, so that both see the same noise.

Each round, on each build: one create / exec `echo hi` (?wait=true) / delete cycle, timed per
step, then one exec into a sandbox created at the start (the exec alone). Prints p50 / p90 of each
step per build, their ratio, and a summary line `api_ab key=value ...`.

Usage (as root): bench/api_ab.py --a DIR --b DIR [--rounds 200] [--pool 2]
DIR is a build directory (DIR/bin/skiffd, skiff-box, skiff-init), as for api_cycle.py --build.
Everything it made is removed at the end, as api_cycle.py does.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import api_cycle as ac  # noqa: E402

STEPS = ("create", "exec", "delete", "cycle", "exec_alone")


def side(build, instance, box_instance, pool, tmpdir):
    args = argparse.Namespace(build=build, instance=instance, box_instance=box_instance,
                              pool=pool, tmpdir=tmpdir)
    tmp = tempfile.mkdtemp(prefix=f"skiff-api-ab-{instance}.", dir=tmpdir)
    return args, tmp, ac.Skiffd(args, tmp)


def one_round(api, sid_alone, into):
    t = ac.timed_cycle(api)
    t0 = time.perf_counter_ns()
    api.exec_echo(sid_alone)
    t["exec_alone"] = ac.ms(time.perf_counter_ns() - t0)
    for k, v in t.items():
        into[k].append(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, help="build directory A (the baseline)")
    ap.add_argument("--b", required=True, help="build directory B")
    ap.add_argument("--rounds", type=int, default=200, help="measured rounds (200)")
    ap.add_argument("--warmup", type=int, default=20, help="unmeasured rounds first (20)")
    ap.add_argument("--pool", type=int, default=2, help="skiffd dev --pool (2)")
    ap.add_argument("--tmpdir", default=None, help="where the data directories go")
    ap.add_argument("--pause", type=float, default=0.0,
                    help="seconds of quiet after each round (0): long enough, each build's "
                         "pool refill lands in it instead of in the other build's round")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("api_ab: needs root (skiffd dev makes sandboxes)")
    sides = {"A": side(args.a, "baa1", "baa2", args.pool, args.tmpdir),
             "B": side(args.b, "bab1", "bab2", args.pool, args.tmpdir)}
    ac.log(ac.run_banner("api_ab"))
    ac.log(f"A: {os.path.abspath(args.a)}\nB: {os.path.abspath(args.b)}")
    res = {k: {s: [] for s in STEPS} for k in sides}
    ok = False
    try:
        apis, alone = {}, {}
        for k, (_, _, sk) in sides.items():
            sk.start()
            ac.wait_pool(sk, args.pool)
            apis[k] = ac.Api(sk.port, sk.token)
            alone[k] = apis[k].create()
        for i in range(args.warmup + args.rounds):
            order = ("A", "B") if i % 2 == 0 else ("B", "A")
            for k in order:
                one_round(apis[k], alone[k], res[k] if i >= args.warmup else
                          {s: [] for s in STEPS})
                if args.pause > 0:
                    time.sleep(args.pause)
        for k in sides:
            apis[k].delete(alone[k])
            apis[k].close()
        ok = True
    finally:
        cleaned = {k: ac.cleanup(sk, [a.instance, a.box_instance], tmp, ok)
                   for k, (a, tmp, sk) in sides.items()}
    ac.log(f"\n### {args.rounds} rounds, each build in turn (ms)\n")
    ac.log("| step | A p50 | A p90 | B p50 | B p90 | B/A p50 |")
    ac.log("| --- | --- | --- | --- | --- | --- |")
    summary = {"rounds": args.rounds}
    for s in STEPS:
        a50, b50 = ac.pct(res["A"][s], 50), ac.pct(res["B"][s], 50)
        ac.log(f"| {s} | {a50:.2f} | {ac.pct(res['A'][s], 90):.2f} | {b50:.2f} | "
               f"{ac.pct(res['B'][s], 90):.2f} | {b50 / a50:.2f} |")
        summary[f"a_{s}_p50_ms"] = a50
        summary[f"b_{s}_p50_ms"] = b50
    left = [k for k, c in cleaned.items() if len(c["instances_gone"]) != 2]
    ac.log("\napi_ab " + " ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    if left:
        sys.exit(f"api_ab: /run/skiff/<instance> left behind by {', '.join(left)}")


if __name__ == "__main__":
    main()
