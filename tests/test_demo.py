"""The README's main-job command ends in `python -m goloop.demo`: it must run
and show what it claims."""


def test_demo_runs_and_shows_each_section(run_module):
    r = run_module("goloop.demo", timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "sorted by length: ['fig', 'pear', 'kiwi', 'banana']" in out
    assert out.count("RecursionError") == 2
    assert "loop: EventLoop; steps that ran on a goroutine: 10000 of 10000" in out
    assert "goloop   resume+park round trip:" in out
