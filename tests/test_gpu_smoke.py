"""bench/gpu_smoke.py --dry-run: the GPU smoke script's entry points (train, plan, eval, serve) on CPU."""

import pytest


@pytest.mark.slow
def test_gpu_smoke_dry_run(tmp_path, capsys):
    import sys

    from tests.conftest import ROOT

    sys.path.insert(0, str(ROOT / "bench"))
    import gpu_smoke

    gpu_smoke.main(["--dry-run", "--work", str(tmp_path)])
    out = capsys.readouterr().out
    assert "[hf] trained 2 steps" in out and "[hf] update" in out and "estimate" in out
    assert "[eval]" in out and "[serve] turns" in out and out.rstrip().endswith("gpu_smoke: ok")
