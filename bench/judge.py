"""Judge throughput: judged answers per second with 1 request in flight vs 16, against a loopback judge server.

The server (``memfactory_cli.rewards.judge.loopback``, in its own process like a real judge) sleeps 50 ms per
request, standing in for a remote judge's latency; the cache is off and every prediction is distinct, so each
answer costs one real HTTP request. What is measured is the whole ``Judge.judge`` batch: prompt rendering, the
async client, parsing.

- ratio = rate(concurrency 16) / rate(concurrency 1); the ceiling is 16 when latency dominates.

Last line: ``ratio=X``.
"""

from __future__ import annotations

import subprocess
import sys

import _common  # noqa: F401  (sets the offline environment)

from memfactory_cli.rewards.judge import Judge, JudgeConfig

ANSWERS, LATENCY_S = 64, 0.05


def main() -> None:
    from _common import alternate

    questions = [f"Which city does person {i} live in?" for i in range(ANSWERS)]
    references = [[f"city {i}", f"town {i}"] for i in range(ANSWERS)]
    predictions = [f"city {i}" if i % 3 else f"village {i}" for i in range(ANSWERS)]
    server = subprocess.Popen(
        [sys.executable, "-m", "memfactory_cli.rewards.judge.loopback", str(LATENCY_S)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        base_url = server.stdout.readline().strip()
        judges = {c: Judge(JudgeConfig(base_url=base_url, model="judge", concurrency=c, cache=False)) for c in (1, 16)}

        def run(concurrency: int) -> None:
            report = judges[concurrency].judge(questions, references, predictions)
            assert report.errors == 0 and report.calls == ANSWERS, report.failures

        t = alternate({"c1": lambda: run(1), "c16": lambda: run(16)}, repeats=3)
    finally:
        server.stdin.close()
        server.wait(timeout=10)
    rate1, rate16 = ANSWERS / t["c1"], ANSWERS / t["c16"]
    print(f"{ANSWERS} distinct answers per batch, {LATENCY_S * 1000:.0f} ms server latency, one request each")
    print(f"concurrency  1   {rate1:7.1f} answers/s   ({t['c1']:.3f} s per batch)")
    print(f"concurrency 16   {rate16:7.1f} answers/s   ({t['c16']:.3f} s per batch)")
    print(f"ratio={rate16 / rate1:.2f}")


if __name__ == "__main__":
    main()
