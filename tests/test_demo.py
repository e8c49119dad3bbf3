"""The demo's process runner: the pipelines that train at once (`aiaic_jax.demo.run_processes`)."""

from __future__ import annotations

import itertools
import sys
import time

import pytest

from aiaic_jax import demo


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_each_process_logs_its_output_and_jobs_caps_how_many_run(tmp_path):
    # Each command writes when it starts and ends; with jobs=1 none starts before the last ended.
    code = (
        "import sys, time; open(sys.argv[1], 'w').write(str(time.time())); "
        "print('[demo] out', sys.argv[1]); print('err', file=sys.stderr); "
        "time.sleep(float(sys.argv[2])); "
        "open(sys.argv[1], 'a').write(' ' + str(time.time()))"
    )
    names = ("a", "b", "c")

    def commands(sleep: float) -> dict[str, list[str]]:
        return {n: [*_python(code), str(tmp_path / f"{n}.times"), str(sleep)] for n in names}

    logs = {name: str(tmp_path / f"{name}.log") for name in names}
    assert list(demo.run_processes(commands(0.2), logs, jobs=1)) == list(names)
    spans = [tuple(map(float, (tmp_path / f"{n}.times").read_text().split())) for n in names]
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))
    for name in names:
        text = (tmp_path / f"{name}.log").read_text()
        assert f"[demo] out {tmp_path / name}.times" in text and "err" in text

    # With jobs=3 they overlap (3 s each: time enough for all three to start on a busy machine).
    assert sorted(demo.run_processes(commands(3.0), logs, jobs=3)) == list(names)
    spans = [tuple(map(float, (tmp_path / f"{n}.times").read_text().split())) for n in names]
    assert max(start for start, _ in spans) < min(end for _, end in spans)


def test_a_failure_stops_the_others_and_names_its_log(tmp_path):
    commands = {
        "slow": _python("import time; time.sleep(60)"),
        "broken": _python("import sys; print('what went wrong'); sys.exit(3)"),
    }
    logs = {name: str(tmp_path / f"{name}.log") for name in commands}
    started = time.perf_counter()
    with pytest.raises(SystemExit) as failure:
        list(demo.run_processes(commands, logs, jobs=2))
    assert time.perf_counter() - started < 30  # the slow one was stopped, not waited for
    message = str(failure.value)
    assert "broken failed (exit status 3)" in message
    assert logs["broken"] in message and "what went wrong" in message
