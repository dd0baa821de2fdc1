"""No lost wake-ups: every preempted step is resumed or unwound, on every
path, and every task finishes.

The stress probe (probes/stress_probe.py) runs thousands of short-lived
tasks — futures, sleeps, socket and TLS I/O, executor getaddrinfo,
cancellations and timeouts, CPU bursts — beside CPU hogs, on loops run in
the four ways asyncio programs run them (run(), a Runner used twice, a loop
stopped with steps in flight and run again, a loop interrupted by a
KeyboardInterrupt out of a preempted step and run again), at slices from
50 µs to 1 ms.  A watchdog dumps every task's stack and the loop's queues
on a hang.  `make stress` runs it many more times with fresh seeds.
"""
import shutil
import subprocess

import pytest

from preempt_helpers import run_probe


@pytest.fixture(scope="module")
def certfile(tmp_path_factory):
    """A self-signed key and certificate for 127.0.0.1/localhost."""
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "key.pem", d / "cert.pem"
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a test certificate")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    both = d / "keycert.pem"
    both.write_bytes(key.read_bytes() + cert.read_bytes())
    return str(both)


def run_stress(run_python, certfile, time_slice, *extra, deadline=60):
    return run_probe(run_python, "stress_probe.py", time_slice, certfile, "--deadline", deadline,
                     *extra, timeout_s=deadline)


@pytest.mark.parametrize("time_slice", [50e-6, 0.0002, 0.001])
def test_every_task_finishes_under_preemption(run_python, certfile, time_slice):
    r, out = run_stress(run_python, certfile, time_slice, "--cycles", "4")
    assert r.returncode == 0, f"exit {r.returncode}:\n{r.stderr[-6000:]}"
    # 4 cycles, one of them running its workload twice, 300 tasks each.
    assert out["tasks"] == 1500, out
    assert set(out["kinds"]) == {"future", "sleep", "socket", "tls", "resolve", "cancel", "burn"}
    assert out["preemptions"] >= 20, out


def test_control_a_queue_lost_to_an_exception_is_caught_as_a_hang(run_python, certfile):
    r, out = run_stress(run_python, certfile, 0.0002, "--cycles", "4", "--unsafe", deadline=10)
    assert r.returncode == 3 and "HANG in cycle 3" in r.stderr, (r.returncode, out, r.stderr[-3000:])
    assert "preempted worker:" in r.stderr and "--- <Task" in r.stderr
