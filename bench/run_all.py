"""``make bench``: run every bench script, then print one table of their closing ``ratio=``/``exponent=`` lines.

Besides the last line, any ``baseline_exponent=`` line a script prints (scaling.py) is shown too, and each figure is
set beside its goal where the issue states one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOALS = {
    "rollout": "ratio >= 2.5, efficiency <= 1.15",
    "scaling": "exponent <= 1.05",
    "overhead": "ratio <= 1.10",
    "logprobs": "ratio <= 0.5",
    "planner": "ratio <= 1.15",
    "vllm": "ratio >= 3",
}
NOT_BENCHES = ("run_all.py", "gpu_smoke.py")  # gpu_smoke: a CUDA smoke run (bench/gpu_smoke.sh), no ratio
EXTRA = ("baseline_exponent=",)


def main() -> int:
    rows = []
    for script in sorted(HERE.glob("*.py")):
        if script.name.startswith("_") or script.name in NOT_BENCHES:
            continue
        print(f"== {script.name}", flush=True)
        result = subprocess.run([sys.executable, str(script)], cwd=HERE, capture_output=True, text=True)
        print(result.stdout, end="")
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        if lines and result.returncode == 0:
            last = "  ".join([line for line in lines[:-1] if line.startswith(EXTRA)] + [lines[-1]])
        else:
            last = f"FAILED ({result.returncode}): {result.stderr.strip().splitlines()[-1:]}"
        rows.append((script.stem, last, GOALS.get(script.stem, "-")))
    width = max(len(name) for name, _, _ in rows)
    result_width = max(len(last) for _, last, _ in rows)
    print("\n" + "benchmark".ljust(width + 3) + "result".ljust(result_width + 3) + "goal")
    for name, last, goal in rows:
        print(f"{name.ljust(width)}   {last.ljust(result_width)}   {goal}")
    return 0 if all(not last.startswith("FAILED") for _, last, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
