"""Nothing lost, nothing unsafe: kill -9 and resume, damaged checkpoints, failed writes, Ctrl-C, YAML tags."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from evoprune import atomic, load_config
from evoprune.atomic import atomic_write, write_json, write_text
from evoprune.config import Config
from evoprune.fitness.recipe import one_thread_on_cpu
from evoprune.run.files import CHECKPOINT, CHECKPOINT_PREV
from evoprune.run.search import RunDirSearch
from evoprune.run.writer import CheckpointError, RunWriter

ROOT = Path(__file__).resolve().parents[1]
# One thread per process: on a small shared machine, torch's default (all cores, per process)
# makes concurrent runs crawl; it does not change results.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
# Runs compared bit for bit stay on the CPU (GPU kernels need not be deterministic run to run).
CPU = ["fitness.device=cpu"]


def _sets(overrides: list[str]) -> list[str]:
    return [f"--set={s}" for s in overrides]


def _one_thread():
    return one_thread_on_cpu(torch.device("cpu"))


def _cli(argv: list) -> tuple[int, str, str]:
    return run_cli(argv)


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("evoprune:"), err
    assert "Traceback" not in err
    return lines[0]


def _no_temp_files(d: Path) -> None:
    assert not [p.name for p in d.iterdir() if p.name.endswith(".tmp")]


def _records(run: Path) -> list[tuple]:
    """Every evaluation of a run (everything but wall time), from its checkpoint."""
    doc = json.loads((run / CHECKPOINT).read_text())
    return [(r["index"], r["generation"], r["key"], r["origin"],
             {k: v for k, v in r["objectives"].items() if k != "seconds"}) for r in doc["records"]]


def _front(run: Path) -> list[dict]:
    return json.loads((run / "front.json").read_text())["front"]


# -- a finished tiny run, made once through the CLI (in-process) ------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    from conftest import TINY

    run = tmp_path_factory.mktemp("finished") / "run"
    with _one_thread():
        rc, _, err = _cli(["search", "--out", run, "--quiet", *_sets(TINY + CPU)])
    assert rc == 0, err
    return run


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# -- 3. crash-safe resume under real kill -9 --------------------------------------------------------
def _checkpoint_generation(run: Path) -> int:
    try:
        return json.loads((run / CHECKPOINT).read_text())["generation"]
    except (OSError, ValueError, KeyError):
        return -1


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_gives_exactly_the_uninterrupted_result(tmp_path, tiny_overrides):
    seed = int(os.environ.get("EVOPRUNE_KILL_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    # EVOPRUNE_KILL_EVALUATOR=batched|sequential runs it with another evaluator than auto's choice.
    other = os.environ.get("EVOPRUNE_KILL_EVALUATOR")
    kind = [f"evaluator.kind={other}"] if other else []
    sets = _sets(tiny_overrides + ["search.generations=4"] + kind + CPU)
    base = [sys.executable, "-m", "evoprune", "search", "--quiet"]

    # The uninterrupted reference, timed: when its first checkpoint appears and how long a generation takes.
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    proc = subprocess.Popen(base + ["--out", str(ref), *sets], env=ENV, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: dict[int, float] = {}
    while proc.poll() is None:
        g = _checkpoint_generation(ref)
        if g >= 0 and g not in seen:
            seen[g] = time.monotonic() - t0
        time.sleep(0.01)
    assert proc.returncode == 0, proc.stderr.read()
    first_ckpt = seen.get(0, time.monotonic() - t0)
    gen_time = max(0.05, (max(seen.values()) - first_ckpt) / max(1, len(seen) - 1))

    run = tmp_path / "run"
    fresh = base + ["--out", str(run), *sets]
    resume = base + ["--resume", str(run)]
    cmd, kills, log, n_proc = fresh, [], [], 0
    while True:
        n_proc += 1
        assert n_proc <= 12, f"did not finish: {log} (seed {seed})"
        start_gen = _checkpoint_generation(run)
        proc = subprocess.Popen(cmd + (["--force"] if cmd is fresh and run.exists() else []), env=ENV, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if len(kills) < 4:
            if not kills:  # anywhere from start-up (imports, parent training) to the first checkpoint
                deadline, latest = time.monotonic() + rng.uniform(0.2, 1.3 * first_ckpt), -1
            else:  # once this process has saved a generation: inside the next one, at the latest its end
                while proc.poll() is None and _checkpoint_generation(run) <= start_gen:
                    time.sleep(0.005)
                deadline, latest = time.monotonic() + rng.uniform(0.0, gen_time), start_gen + 1
            while proc.poll() is None and time.monotonic() < deadline and _checkpoint_generation(run) <= latest:
                time.sleep(0.005)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                kills.append(_checkpoint_generation(run))
                log.append(f"killed (checkpoint gen {kills[-1]})")
                if RunWriter(run).has_checkpoint():  # atomic writes: what is there is whole, no fallback needed
                    assert RunWriter(run).load_checkpoint()[2] == CHECKPOINT
                    json.loads((run / "front.json").read_text())
                cmd = resume
                continue
        err = proc.communicate()[1]
        if proc.returncode == 0:
            log.append("finished")
            break
        # A run killed before it wrote its config cannot be resumed (a resume starts it again once it has
        # one): that must fail cleanly, and the fresh command starts it over.
        assert cmd is resume and proc.returncode == 2, f"rc {proc.returncode}: {err} ({log}, seed {seed})"
        line = _one_error_line(err)
        assert not RunWriter(run).has_checkpoint(), line
        log.append("resume refused (no config yet) -> start over")
        cmd = fresh

    print(f"\nkill -9 test (seed {seed}): {' | '.join(log)}")
    assert len(kills) >= 3, f"only {len(kills)} kills landed: {log} (seed {seed})"
    assert _front(run) == _front(ref)
    assert _records(run) == _records(ref)  # every evaluation, in order: nothing lost, nothing redone differently
    _no_temp_files(run)


# -- 4. atomic artifacts ----------------------------------------------------------------------------
def test_checkpoint_damaged_falls_back_to_previous_with_a_warning(finished_run, tmp_path):
    run = _copy_run(finished_run, tmp_path / "run")
    prev_gen = json.loads((run / CHECKPOINT_PREV).read_text())["generation"]
    text = (run / CHECKPOINT).read_text()
    (run / CHECKPOINT).write_text(text[: len(text) // 2])  # truncated mid-write by something outside us
    with pytest.warns(UserWarning, match="checkpoint.prev.json"):
        state = RunWriter(run).read_checkpoint()
    assert state.generation == prev_gen


@pytest.mark.parametrize("damage", [b"", b"{", b"[]", b"null", b'{"format": 99}', b'{"format": 1}', b"\xff\xfe\x00",
                                    b'{"format": 1, "generation": 0, "records": [], "population": ["nokey"], '
                                    b'"crowding": [0.0], "history": [], "rng_state": [3, [1], null]}',
                                    b'{"format": 1, "generation": 0, "records": [], "population": [], '
                                    b'"crowding": [], "history": [], "rng_state": "not a state"}'])
def test_any_damage_is_detected(finished_run, tmp_path, damage):
    run = _copy_run(finished_run, tmp_path / "run")
    (run / CHECKPOINT).write_bytes(damage)
    with pytest.warns(UserWarning, match="damaged"):
        assert RunWriter(run).read_checkpoint().generation >= 0
    (run / CHECKPOINT_PREV).write_bytes(damage)
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        RunWriter(run).read_checkpoint()


def test_resume_from_damaged_checkpoint_redoes_the_lost_generation_exactly(finished_run, tmp_path):
    run = _copy_run(finished_run, tmp_path / "run")
    text = (run / CHECKPOINT).read_text()
    (run / CHECKPOINT).write_text(text[:100])
    with _one_thread():
        rc, _, err = _cli(["search", "--resume", run, "--quiet"])
    assert rc == 0, err
    assert "evoprune: warning:" in err and "checkpoint.prev.json" in err
    assert _front(run) == _front(finished_run)
    assert _records(run) == _records(finished_run)
    _no_temp_files(run)


def test_both_checkpoints_damaged_is_a_clear_error_before_any_work(finished_run, tmp_path, monkeypatch):
    run = _copy_run(finished_run, tmp_path / "run")
    (run / CHECKPOINT).write_text('{"format": 1, "gener')
    (run / CHECKPOINT_PREV).write_text("")
    monkeypatch.setattr("evoprune.fitness.build_fitness", lambda *a, **k: pytest.fail("work started"))
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    rc, _, err = _cli(["search", "--resume", run, "--quiet"])
    assert rc == 2
    line = _one_error_line(err)
    assert "no usable checkpoint" in line and CHECKPOINT in line and CHECKPOINT_PREV in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_refuses_a_config_changed_since_the_checkpoint(finished_run, tmp_path, monkeypatch):
    run = _copy_run(finished_run, tmp_path / "run")
    cfg = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(cfg.replace("steps: 3", "steps: 4"))
    monkeypatch.setattr("evoprune.fitness.build_fitness", lambda *a, **k: pytest.fail("work started"))
    rc, _, err = _cli(["search", "--resume", run, "--quiet"])
    assert rc == 2 and "fitness.steps" in _one_error_line(err)


def test_resume_with_a_larger_budget_keeps_it(finished_run, tmp_path):
    run = _copy_run(finished_run, tmp_path / "run")
    with _one_thread():
        rc, out, err = _cli(["search", "--resume", run, "--quiet", "--set", "search.generations=3"])
    assert rc == 0, err
    assert "generations: 3" in (run / "config.yaml").read_text()  # a later plain resume keeps the budget
    assert json.loads((run / CHECKPOINT).read_text())["generation"] == 3


def test_failed_replace_keeps_previous_content_and_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "front.json"
    write_json(target, {"v": 1})
    before = target.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        write_json(target, {"v": 2, "big": list(range(1000))})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["front.json"]


def test_failed_write_midway_keeps_previous_content_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "checkpoint.json"
    write_text(target, "old\n")

    def half_then_fail(fh):
        fh.write("new, but only ha")
        raise OSError(5, "I/O error")

    with pytest.raises(OSError):
        atomic_write(target, half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, lambda fh: (fh.write("x"), (_ for _ in ()).throw(KeyboardInterrupt())))
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.json"]


def test_failed_checkpoint_write_keeps_the_last_good_checkpoint(finished_run, tmp_path, monkeypatch, tiny_overrides):
    run = _copy_run(finished_run, tmp_path / "run")
    good = {n: (run / n).read_bytes() for n in (CHECKPOINT, CHECKPOINT_PREV)}
    state = RunWriter(run).read_checkpoint()
    real_replace = os.replace

    def replace_fails_for_checkpoints(src, dst):
        if Path(dst).name.startswith("checkpoint"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    class FakeFitness:  # just what write_generation reads
        cfg = load_config(overrides=tiny_overrides)

        @staticmethod
        def parent_summary():
            return {"accuracy": 1.0, "n_params": 1, "macs": 1}

    monkeypatch.setattr(atomic.os, "replace", replace_fails_for_checkpoints)
    with pytest.raises(OSError):
        RunWriter(run).write_generation(state, FakeFitness())
    assert {n: (run / n).read_bytes() for n in good} == good
    _no_temp_files(run)


def test_temp_files_of_a_killed_write_are_cleared(tmp_path):
    (tmp_path / ".checkpoint.json.ab12cd34.tmp").write_text("half")
    (tmp_path / "notes.tmp").write_text("the user's")  # not ours: kept
    removed = RunWriter(tmp_path).clean()
    assert [p.name for p in removed] == [".checkpoint.json.ab12cd34.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["notes.tmp"]


def test_written_files_are_readable_like_normal_files(tmp_path):
    write_text(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


# -- 5. Ctrl-C ----------------------------------------------------------------------------------------
def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_during_search_prints_the_resume_command(finished_run, tmp_path, monkeypatch):
    run = _copy_run(finished_run, tmp_path / "run")
    monkeypatch.setattr(RunDirSearch, "run", _interrupt)
    with _one_thread():
        rc, _, err = _cli(["search", "--resume", run, "--quiet"])
    assert rc == 130
    line = _one_error_line(err)
    assert f"python -m evoprune search --resume {run}" in line


def test_ctrl_c_of_a_fresh_run_after_its_first_checkpoint_prints_the_resume_command(tmp_path, monkeypatch,
                                                                                   tiny_overrides):
    real_write = RunWriter.on_generation

    def checkpoint_then_interrupt(self, *args):
        real_write(self, *args)  # generation 0 is saved, then "Ctrl-C"
        raise KeyboardInterrupt

    monkeypatch.setattr(RunWriter, "on_generation", checkpoint_then_interrupt)
    run = tmp_path / "run"
    with _one_thread():
        rc, _, err = _cli(["search", "--out", run, "--quiet", *_sets(tiny_overrides)])
    assert rc == 130
    assert f"--resume {run}" in _one_error_line(err)


def test_ctrl_c_before_the_first_checkpoint_says_how_to_start_over(tmp_path, monkeypatch):
    monkeypatch.setattr("evoprune.fitness.build_fitness", _interrupt)  # e.g. while the parent trains
    run = tmp_path / "run"
    rc, _, err = _cli(["search", "--out", run, "--quiet", "--set", "search.generations=3"])
    assert rc == 130
    line = _one_error_line(err)
    assert f"--out {run}" in line and "search.generations=3" in line
    assert "--force" not in line  # nothing was saved, so the same command may start it again


@pytest.mark.slow
def test_sigterm_stops_a_search_like_ctrl_c_and_it_resumes(tmp_path, tiny_overrides):
    run = tmp_path / "run"
    sets = _sets(tiny_overrides + ["search.generations=30"] + CPU)
    # As `timeout` does: SIGTERM to the whole process group, the forked workers included.
    proc = subprocess.Popen([sys.executable, "-m", "evoprune", "search", "--quiet", "--out", str(run), *sets],
                            env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while _checkpoint_generation(run) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, err
    line = _one_error_line(err)
    assert "terminated" in line and f"--resume {run}" in line
    saved = _checkpoint_generation(run)
    assert saved >= 1
    done = subprocess.run([sys.executable, "-m", "evoprune", "search", "--quiet", "--resume", str(run),
                           "--set", f"search.generations={saved + 1}"], env=ENV, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _checkpoint_generation(run) == saved + 1


def _dies_on_marked_genomes(model, fitness, *args, **kwargs):
    """A fine-tune that crashes natively once the marker file exists (forked children check it each call)."""
    if os.path.exists(os.environ["EVOPRUNE_TEST_MARKER"]):
        os.kill(os.getpid(), signal.SIGABRT)
    return _REAL_FINETUNE(model, fitness, *args, **kwargs)


from evoprune.fitness.evaluators import sequential  # noqa: E402

_REAL_FINETUNE = sequential.finetune_and_recalibrate


def test_a_crashed_worker_stops_the_search_with_one_paragraph_and_keeps_the_genome(tmp_path, monkeypatch,
                                                                                  tiny_overrides):
    marker = tmp_path / "crash-now"
    monkeypatch.setenv("EVOPRUNE_TEST_MARKER", str(marker))
    monkeypatch.setattr(sequential, "finetune_and_recalibrate", _dies_on_marked_genomes)
    real_write = RunWriter.on_generation

    def checkpoint_then_arm(self, *args):
        real_write(self, *args)
        marker.touch()  # generation 0 is saved; the next fine-tune crashes

    monkeypatch.setattr(RunWriter, "on_generation", checkpoint_then_arm)
    run = tmp_path / "run"
    rc, _, err = _cli(["search", "--out", run, "--quiet", *_sets(tiny_overrides + ["evaluator.pool=processes",
                                                                                    "evaluator.threads=2"])])
    assert rc == 1, err
    assert "Traceback" not in err and "\n\n" not in err.strip() and err.startswith("evoprune: the search stopped")
    text = " ".join(err.split())
    assert "SIGABRT" in text and "not a lack of memory" in text and f"--resume {run}" in text
    saved = json.loads((run / "failed-genome.json").read_text())
    assert saved["key"] in text and saved["genome"]
    assert _checkpoint_generation(run) == 0


# -- 6. safety ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("doc", [
    '!!python/object/apply:os.system ["touch {marker}"]\n',
    'seed: !!python/object/apply:os.system ["touch {marker}"]\n',
    'search: !!python/object/new:subprocess.Popen [["touch", "{marker}"]]\n',
    'x: !!python/name:os.system\n',
])
def test_yaml_python_tags_are_refused_not_executed(tmp_path, doc):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(doc.format(marker=marker))
    rc, _, err = _cli(["search", "--config", cfg, "--out", tmp_path / "run"])
    assert rc == 2
    _one_error_line(err)
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_yaml_python_tag_in_a_set_value_is_only_a_string(tmp_path):
    marker = tmp_path / "pwned"
    evil = f'seed=!!python/object/apply:os.system ["touch {marker}"]'
    rc, _, err = _cli(["search", "--out", tmp_path / "run", "--set", evil])
    assert rc == 2 and "seed" in _one_error_line(err)
    assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.mark.skipif(not hasattr(Config(), "evaluator"), reason="no evaluator choice in this version")
def test_resume_reuses_the_evaluator_the_run_used(finished_run, tmp_path, monkeypatch):
    run = _copy_run(finished_run, tmp_path / "run")
    doc = json.loads((run / CHECKPOINT).read_text())
    assert doc["evaluator"] in ("sequential", "batched")
    other = "batched" if doc["evaluator"] == "sequential" else "sequential"
    doc["evaluator"] = other  # as if a timing probe had chosen the other one when the run started
    (run / CHECKPOINT).write_text(json.dumps(doc))
    seen = []

    def capture(cfg, *args, **kwargs):
        seen.append(cfg)
        raise KeyboardInterrupt

    monkeypatch.setattr("evoprune.fitness.build_fitness", capture)
    rc, _, _ = _cli(["search", "--resume", run, "--quiet"])
    assert rc == 130 and seen[0].evaluator.kind == other
    assert "kind: auto" in (run / "config.yaml").read_text()  # the user's config is left as it was
