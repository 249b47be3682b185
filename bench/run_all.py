"""``make bench``: run every bench script, then print one table of their closing ``ratio=``/``exponent=`` lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    rows = []
    for script in sorted(HERE.glob("*.py")):
        if script.name.startswith("_") or script.name == "run_all.py":
            continue
        print(f"== {script.name}", flush=True)
        result = subprocess.run([sys.executable, str(script)], cwd=HERE, capture_output=True, text=True)
        print(result.stdout, end="")
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        last = lines[-1] if lines and result.returncode == 0 else f"FAILED ({result.returncode}): {result.stderr.strip().splitlines()[-1:]}"
        rows.append((script.stem, last))
    width = max(len(name) for name, _ in rows)
    print("\nbenchmark".ljust(width + 3) + "result")
    for name, last in rows:
        print(f"{name.ljust(width)}   {last}")
    return 0 if all(not last.startswith("FAILED") for _, last in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
