"""The network and HTTP workloads run end to end through python -m benchmarks,
scaled down to a fraction of a second each, on asyncio and goloop: every
server variant, 10 client processes, every message size; the figures are
there and positive (not checked otherwise).  The HTTP one needs httptools
(the bench extra) and uses wrk when installed, the Python clients otherwise."""
import importlib.util
import os

import pytest

ECHO = ("echo sock_* 1 KiB x10", "echo streams 10 KiB x10", "echo Protocol 100 KiB x10",
        "echo BufferedProtocol 1 KiB x10")
HTTP = "HTTP keep-alive x50"

WRK_OUTPUT = """\
Running 1s test @ http://127.0.0.1:41597/
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   118.91us  225.71us   3.98ms   98.16%
    Req/Sec    87.82k    15.11k  102.36k    80.00%
  Latency Distribution
     50%   86.00us
     75%  113.00us
     90%  153.00us
     99%    1.03ms
  87275 requests in 1.00s, 6.49MB read
Requests/sec:  87206.19
Transfer/sec:      6.49MB
"""


def run_workloads(run_benchmarks, tmp_path, names):
    r, rows = run_benchmarks(tmp_path / "run.jsonl", "--quick", "--scale", "0.1", "--loops", "asyncio,goloop",
                             *(arg for name in names for arg in ("-k", name)), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "error" not in r.stdout
    figures = {(row["workload"], row["loop"], row["metric"]): row["value"] for row in rows}
    for name in names:
        assert f"| {name} |" in r.stdout
        for loop in ("asyncio", "goloop"):
            assert figures[name, loop, "requests_per_s"] > 0
            assert figures[name, loop, "server_cpu_per_req"] > 0


def test_echo_workloads(run_benchmarks, tmp_path):
    run_workloads(run_benchmarks, tmp_path, ECHO)


@pytest.mark.skipif(importlib.util.find_spec("httptools") is None, reason="needs httptools (the bench extra)")
def test_http_workload(run_benchmarks, tmp_path):
    run_workloads(run_benchmarks, tmp_path, (HTTP,))


def test_parse_wrk(monkeypatch):
    monkeypatch.syspath_prepend(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks.workloads.http import parse_wrk

    metrics, requests = parse_wrk(WRK_OUTPUT)
    assert requests == 87275
    assert metrics == {"requests_per_s": 87206.19, "latency_p50": pytest.approx(0.086),
                       "latency_p99": pytest.approx(1.03)}
