"""curves.png from metrics.jsonl, the callback that never fails a run, and the memory traces SwanLab receives."""

import json
import sys
import types

from memfactory_cli.report.curves import panels, plot_curves
from memfactory_cli.trainer.callbacks import CurvesCallback, RolloutSink, SwanLabTraces
from tests.test_retention import handmade

PNG = b"\x89PNG\r\n\x1a\n"


def metrics(steps=3):
    return [
        {
            "step": s,
            "loss": 0.1 * s,
            "reward/mean": 0.2 * s,
            "reward/std": 0.1,
            "rewards/exact_match/mean": 0.1 * s,
            "rewards/format/mean": 1.0,
            "frac_reward_zero_std": 0.5,
            "retention/final": None if s == 2 else 0.5,  # undefined at step 2: a gap, not 0
            "retention/seen": 1.0,
            "time/generate_s": 2.0,
            "time/reward_s": 0.1,
            "time/update_s": 1.0,
        }
        for s in range(1, steps + 1)
    ]


def test_panels_are_those_some_step_logged():
    chosen = panels(metrics())
    assert chosen["reward functions (mean)"] == ["rewards/exact_match/mean", "rewards/format/mean"]
    assert chosen["answer retention"] == ["retention/final", "retention/seen"]
    assert chosen["seconds per step"] == ["time/generate_s", "time/reward_s", "time/update_s"]
    no_retention = [{k: v for k, v in r.items() if not k.startswith("retention/")} for r in metrics()]
    assert "answer retention" not in panels(no_retention)


def test_curves_png_is_written_atomically(tmp_path):
    path = tmp_path / "curves.png"
    plot_curves(metrics(), path)
    assert path.read_bytes()[:8] == PNG
    plot_curves([], path)  # before the first logged step: a placeholder picture, no error
    assert path.read_bytes()[:8] == PNG and [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_curves_callback_redraws_from_the_file_and_a_plot_error_is_one_warning(tmp_path, monkeypatch, capsys):
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in metrics()) + '{"step": 4, "lo')  # torn last line
    callback = CurvesCallback(log, tmp_path / "curves.png")  # wraps Curves, which the RMM loop calls directly
    state = types.SimpleNamespace(is_world_process_zero=True)
    callback.on_log(None, state, None, logs={"loss": 0.3})
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG

    def broken(records, path):
        raise RuntimeError("no display")

    monkeypatch.setattr("memfactory_cli.report.curves.plot_curves", broken)
    callback.on_log(None, state, None, logs={"loss": 0.3})
    callback.on_train_end(None, state, None)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: could not draw {tmp_path / 'curves.png'}: RuntimeError: no display"]


class FakeSwanLab(types.ModuleType):
    def __init__(self, running=True):
        super().__init__("swanlab")
        self.running, self.logged = running, []

    def has_run(self):
        return self.running

    class Text:
        def __init__(self, content, caption=None):
            self.content, self.caption = content, caption

    def log(self, data, step=None):
        self.logged.append((step, data))


def test_swanlab_receives_the_sampled_traces_as_text(tmp_path, monkeypatch):
    from memfactory_cli.agents.base import Trajectory

    fake = FakeSwanLab()
    monkeypatch.setitem(sys.modules, "swanlab", fake)

    class Recorded(Trajectory):
        def __init__(self, record):
            self.record = record

        def to_record(self):
            return self.record

    sink = RolloutSink(tmp_path / "rollouts.jsonl", samples=1, mirrors=[SwanLabTraces()])
    sink.write(5, [Recorded(handmade()), Recorded(handmade())])
    ((step, data),) = fake.logged
    (text,) = data["memory_traces"]
    assert step == 5 and text.caption.startswith("step 5 · slot ")
    assert "--- chunk 2/4 read ---\nLater Alice said: I moved to Lisbon last spring." in text.content
    assert "memory after chunk 4/4 (✗ dropped the answer)" in text.content
    assert json.loads((tmp_path / "rollouts.jsonl").read_text())["chunks"] == handmade()["chunks"]  # the same sample
    fake.running = False
    sink.write(6, [Recorded(handmade())])
    assert len(fake.logged) == 1  # no open SwanLab run: nothing logged, nothing raised


def test_redraws_stay_within_their_time_budget_and_the_last_one_always_happens(tmp_path, monkeypatch):
    from memfactory_cli.trainer.callbacks import Curves

    now = [0.0]
    drawn = []

    def slow_plot(records, path):
        now[0] += 1.0  # every draw takes one (fake) second
        drawn.append(now[0])

    monkeypatch.setattr("memfactory_cli.report.curves.plot_curves", slow_plot)
    curves = Curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png", budget=0.1, clock=lambda: now[0])
    for _ in range(5):  # five logged steps of two seconds each: only the first fits 10% of the time
        curves.draw()
        now[0] += 2.0
    assert drawn == [1.0]
    now[0] = 11.0  # ten seconds after the first draw ended
    curves.draw()
    curves.draw(force=True)
    assert drawn == [1.0, 12.0, 13.0]
