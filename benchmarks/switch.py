"""Goroutine switch cost, measured in one run against greenlet and raw C.

Prints one JSON object:
  goloop_roundtrip_ns    Python -> goroutine -> Python: g.resume() of a
                         goroutine looping on goloop.park()
  greenlet_roundtrip_ns  the same shape with greenlet: child.switch() of a
                         greenlet looping on parent.switch()
  c_switch_ns            one raw context switch (gl_gosave_gogo) in C, no
                         Python: half of a C ping-pong round trip
  c_resume_park_ns       gl_resume + gl_park round trip in C (the runtime
                         calls the Python glue uses, without Python)
and the ratio goloop/greenlet.  Each figure is the best of several
repetitions (the minimum is the least noisy estimate of a cost on a shared
machine).  Run: python benchmarks/switch.py [--quick]
"""
import argparse
import json
import sys
import time

import goloop


def best_ns_per_op(fn, n, reps):
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn(n)
        dt = time.perf_counter_ns() - t0
        best = min(best, dt / n)
    return best


def goloop_roundtrip(n):
    park = goloop.park

    def child():
        while True:
            park()

    g = goloop.Goroutine(child)
    resume = g.resume
    resume()

    def run(k):
        for _ in range(k):
            resume()

    return run


def greenlet_roundtrip(n):
    import greenlet

    parent = greenlet.getcurrent()

    def child():
        while True:
            parent.switch()

    gr = greenlet.greenlet(child)
    switch = gr.switch
    switch()

    def run(k):
        for _ in range(k):
            switch()

    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    args = ap.parse_args(argv)
    n = 100_000 if args.quick else 1_000_000
    reps = 3 if args.quick else 7

    out = {}
    out["goloop_roundtrip_ns"] = round(best_ns_per_op(goloop_roundtrip(n), n, reps), 1)
    try:
        out["greenlet_roundtrip_ns"] = round(best_ns_per_op(greenlet_roundtrip(n), n, reps), 1)
    except ImportError:
        out["greenlet_roundtrip_ns"] = None
        print("greenlet is not installed: pip install greenlet", file=sys.stderr)
    try:
        from goloop import _runtime_cffi

        lib = _runtime_cffi.lib
        cn = n * 10
        out["c_switch_ns"] = round(min(lib.gl_bench_raw_switch_ns(cn) for _ in range(reps)), 2)
        out["c_resume_park_ns"] = round(min(lib.gl_bench_resume_park_ns(cn) for _ in range(reps)), 2)
    except (ImportError, AttributeError) as e:
        out["c_switch_ns"] = None
        print(f"raw C switch not measured: {e}", file=sys.stderr)
    if out.get("greenlet_roundtrip_ns"):
        out["goloop_vs_greenlet"] = round(out["goloop_roundtrip_ns"] / out["greenlet_roundtrip_ns"], 3)
    out["python"] = sys.version.split()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
