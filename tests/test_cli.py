"""The command line on bad input: one `evoprune:` line on stderr, exit code 2, no run directory touched."""
from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from conftest import run_cli
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import evoprune
from evoprune.cli.main import main
from evoprune.config import Config, apply_overrides, config_from_dict, load_config

DEFAULT = Config().to_dict()
SECTIONS = [k for k, v in DEFAULT.items() if isinstance(v, dict)]
KEYS = [f"{s}.{k}" for s in SECTIONS for k in DEFAULT[s]] + [k for k, v in DEFAULT.items() if not isinstance(v, dict)]


class Reached(Exception):
    """Raised by the patched build_fitness: the input passed every check and real work would start."""


def _reached(*args, **kwargs):
    raise Reached


def _cli(argv: list) -> tuple[int, str, str]:
    return run_cli(argv)


def _bad_input(argv: list) -> str:
    """Run the CLI on input it must refuse; returns its one error line."""
    with mock.patch("evoprune.fitness.build_fitness", _reached):
        rc, out, err = _cli(argv)
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evoprune:"), err
    assert "Traceback" not in err
    return lines[0]


def _snapshot(d: Path) -> dict[str, bytes] | None:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()} if d.exists() else None


@pytest.fixture
def fake_run(tmp_path) -> Path:
    """A run directory as far as the CLI's checks go: a valid config and a checkpoint file."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(DEFAULT))
    (run / "checkpoint.json").write_text("{}")
    return run


# -- config and --set ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, where", [
    ("search: {population: 3\n", "malformed YAML"),
    ("- a\n- b\n", "expected a mapping at the top"),
    ("serch: {population: 3}\n", "did you mean 'search'"),
    ("search: {populaton: 3}\n", "did you mean 'search.population'"),
    ("search: {population: many}\n", "search.population: expected an integer"),
    ("search: {population: 1}\n", "search.population"),
    ("population: {ratio_min: 1.5}\n", "population.ratio_min"),
    ("population: {ratio_min: 0.7, ratio_max: 0.3}\n", "population.ratio_min"),
    ("fitness: {steps: -1}\n", "fitness.steps"),
    ("parent: {arch: vgg17}\n", "parent.arch"),
    ("data: {name: imagenet}\n", "data.name"),
    ("!!python/object/apply:os.system [\"echo hi\"]\n", "malformed YAML"),
])
def test_bad_config_file(tmp_path, text, where):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    line = _bad_input(["search", "--config", cfg, "--out", tmp_path / "run"])
    assert line.startswith("evoprune: config error:") and where in line
    assert not (tmp_path / "run").exists()


def test_probabilities_summing_over_one_are_accepted(tmp_path):
    with mock.patch("evoprune.fitness.build_fitness", _reached), pytest.raises(Reached):
        _cli(["search", "--out", tmp_path / "run", "--set", "search.cx_prob=0.9", "--set", "search.mut_prob=0.8"])


@pytest.mark.parametrize("argv, where", [
    (["--config", "/no/such/config.yaml"], "file not found"),
    (["--set", "search.generations"], "KEY=VALUE"),
    (["--set", "seed.x=1"], "'seed' is a setting, not a section"),
    (["--set", "fitness.lr.value=1"], "not a section"),
    (["--set", "serch.generations=3"], "did you mean 'search'"),
    (["--set", "search.generations=-2"], "search.generations"),
    (["--set"], "expected one argument"),
    (["--bogus"], "unrecognized arguments"),
    (["--set", "fitness.device=cuda"] if not torch.cuda.is_available() else ["--set", "fitness.device=gpu"],
     "fitness.device"),
    (["--config", ""], "--config"),
])
def test_bad_flags(tmp_path, argv, where):
    assert where in _bad_input(["search", "--out", tmp_path / "run", *argv])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting, missing, where", [
    ("evaluator.backend=ray", "ray", "pip install 'evoprune[ray]'"),
    ("evaluator.pool=processes", "fork", "needs fork"),
])
def test_what_the_evaluator_needs_is_checked_before_the_parent_is_trained(tmp_path, monkeypatch, setting, missing,
                                                                           where):
    if missing == "ray":
        monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    else:
        monkeypatch.setattr("evoprune.fitness.evaluators.forked.fork_available", lambda: False)
    with mock.patch("evoprune.fitness.build_fitness", _reached):  # never reached
        assert where in _bad_input(["search", "--out", tmp_path / "run", "--set", setting])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv", [[], ["frob"], ["report"], ["search", "extra"], ["report", "a", "b"]])
def test_bad_command_line(argv):
    _bad_input(argv)


def test_help_is_not_an_error(capsys):
    assert main(["--help"]) == 0
    assert main(["search", "--help"]) == 0
    assert "--resume" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["search", "--resume", "a" * 300], ["search", "--config", "a" * 300], ["search", "--out", "a" * 300 + "/run"],
    ["report", "a" * 300], ["search", "--set", "parent.weights=" + "a" * 300], ["search", "--out", "bad\0name"],
])
def test_paths_the_system_refuses_to_look_at(tmp_path, argv):
    needs_out = argv[0] == "search" and "--out" not in argv and "--resume" not in argv
    _bad_input([*argv, "--out", tmp_path / "r"] if needs_out else argv)
    assert not (tmp_path / "r").exists()


# -- parent.weights ----------------------------------------------------------------------------------------
def test_parent_weights_problems_are_found_before_any_work(tmp_path):
    from evoprune.data.task import load_data
    from evoprune.parent.train import build_parent

    cfg = config_from_dict(apply_overrides(Config().to_dict(), ["parent.width=8"]))
    data = load_data(cfg.data, 0)
    good = build_parent(cfg.parent, data.input_shape, data.n_classes).state_dict()
    torch.save(good, tmp_path / "good.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save({"bogus.weight": torch.zeros(3)}, tmp_path / "partial.pt")
    (tmp_path / "text.pt").write_text("not a tensor file")
    out = tmp_path / "run"
    cases = {
        "missing.pt": "file not found",
        "list.pt": "holds a list, not a state_dict",
        "partial.pt": "does not fit the parent",
        "text.pt": "not a PyTorch state_dict file",
        ".": "is a directory",
    }
    trust = ["--set", "parent.trust_split=true"]  # these files come without parent.json (see the split tests)
    for name, where in cases.items():
        line = _bad_input(["search", "--out", out, "--set", f"parent.weights={tmp_path / name}", "--set",
                           "parent.width=8", *trust])
        assert line.startswith("evoprune: config error: parent.weights") and where in line, line
    line = _bad_input(["search", "--out", out, "--set", f"parent.weights={tmp_path / 'good.pt'}",
                       "--set", "parent.width=16", *trust])  # the right file for another width
    assert "does not fit parent.arch=simple_cnn (width 16)" in line and "size mismatch" in line
    assert not out.exists()
    with mock.patch("evoprune.fitness.build_fitness", _reached), pytest.raises(Reached):  # the fitting one
        _cli(["search", "--out", out, "--set", f"parent.weights={tmp_path / 'good.pt'}", "--set", "parent.width=8",
              *trust])
    line = _bad_input(["search", "--out", out, "--set", f"parent.weights={tmp_path / 'good.pt'}", "--set",
                       "parent.width=8"])  # no parent.json, and nothing said about the split it was trained on
    assert "without evoprune's parent.json" in line and "parent.trust_split=true" in line
    with mock.patch("evoprune.fitness.build_fitness", _reached), pytest.raises(Reached):  # the split declared
        _cli(["search", "--out", out, "--set", f"parent.weights={tmp_path / 'good.pt'}", "--set", "parent.width=8",
              "--set", "data.split_seed=0"])


# -- --out -----------------------------------------------------------------------------------------------------
def test_out_refuses_a_non_empty_directory_that_is_not_a_run_unless_forced(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert "not empty" in _bad_input(["search", "--out", out])
    assert _snapshot(out) == {"thesis.tex": b"precious"}
    with mock.patch("evoprune.fitness.build_fitness", _reached), pytest.raises(Reached):
        _cli(["search", "--out", out, "--force"])


def test_out_refuses_a_file_and_a_path_through_a_file_even_with_force(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert "not a directory" in _bad_input(["search", "--out", f, "--force"])
    assert "not a directory" in _bad_input(["search", "--out", f / "sub", "--force"])
    assert f.read_text() == "x"


def test_out_refuses_an_existing_run_and_points_to_resume(fake_run):
    before = _snapshot(fake_run)
    line = _bad_input(["search", "--out", fake_run])
    assert "--resume" in line and "--force" in line
    assert _snapshot(fake_run) == before


def test_an_empty_out_directory_is_fine(tmp_path):
    with mock.patch("evoprune.fitness.build_fitness", _reached), pytest.raises(Reached):
        _cli(["search", "--out", tmp_path])


# -- --resume ---------------------------------------------------------------------------------------------------
def test_resume_a_directory_without_a_run(tmp_path):
    assert "no such directory" in _bad_input(["search", "--resume", tmp_path / "nope"])
    assert "not an evoprune run" in _bad_input(["search", "--resume", tmp_path])
    assert _snapshot(tmp_path) == {}


def test_a_run_killed_before_its_first_checkpoint_starts_again(fake_run):
    (fake_run / "checkpoint.json").unlink()
    (fake_run / "parent.json").write_text("{}")
    before = _snapshot(fake_run)
    for argv in (["search", "--resume", fake_run], ["search", "--out", fake_run]):  # nothing to lose: both start it
        with mock.patch("evoprune.fitness.build_fitness", _reached), pytest.raises(Reached):
            _cli(argv)
    line = _bad_input(["search", "--out", fake_run, "--set", "seed=5"])  # but not with another config
    assert "stopped before its first generation" in line and "seed: 0 there, 5 now" in line and "--force" in line
    (fake_run / "config.yaml").unlink()  # killed while the parent trained: only the parent's cache is there
    line = _bad_input(["search", "--resume", fake_run])
    assert "not an evoprune run directory" in line and f"--out {fake_run}" in line
    assert _snapshot(fake_run) == {k: v for k, v in before.items() if k != "config.yaml"}


def test_resume_without_config_yaml(fake_run):
    (fake_run / "config.yaml").unlink()
    assert "config.yaml is missing" in _bad_input(["search", "--resume", fake_run])


@pytest.mark.parametrize("argv, where", [
    (["--set", "seed=3"], "accepts only"),
    (["--set", "fitness.steps=3"], "accepts only"),
    (["--set", "search.generations"], "KEY=VALUE"),
    (["--set", "search.generations=many"], "search.generations: expected an integer"),
    (["--config", "x.yaml"], "drop --config"),
    (["--out", "elsewhere"], "drop --out"),
    (["--force"], "--force"),
])
def test_resume_with_disallowed_options(fake_run, argv, where):
    before = _snapshot(fake_run)
    assert where in _bad_input(["search", "--resume", fake_run, *argv])
    assert _snapshot(fake_run) == before


def test_resume_with_unusable_checkpoints(fake_run):
    (fake_run / "checkpoint.json").write_text('{"format": 1, "generation": 3, "rec')
    (fake_run / "checkpoint.prev.json").write_text("[]")
    before = _snapshot(fake_run)
    line = _bad_input(["search", "--resume", fake_run])
    assert "no usable checkpoint" in line and "checkpoint.json" in line and "checkpoint.prev.json" in line
    assert _snapshot(fake_run) == before


def test_resume_with_a_damaged_config(fake_run):
    (fake_run / "config.yaml").write_text("search: {population: [\n")
    assert "malformed YAML" in _bad_input(["search", "--resume", fake_run])


# -- report ---------------------------------------------------------------------------------------------------------
def test_report_of_a_directory_without_a_run(tmp_path):
    assert "no front.json" in _bad_input(["report", tmp_path])


@pytest.mark.parametrize("front", ["", "{", "[]", '{"front": 3}', '{"parent": {}, "front": []}'])
def test_report_of_a_damaged_front(tmp_path, front):
    (tmp_path / "front.json").write_text(front)
    assert "damaged" in _bad_input(["report", tmp_path])


# -- property: random configs, overrides and flags --------------------------------------------------------------
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-3, max_value=50),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=-1, max_value=2), st.text(max_size=10),
    st.sampled_from(["cuda", "auto", "resnet20", "scalar", "macs", "adamw", "nope.pt", ".", ""]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.one_of(st.text(max_size=6), st.sampled_from(KEYS)), inner, max_size=3),
                      max_leaves=5)
PATHS = st.one_of(st.sampled_from(KEYS), st.sampled_from(SECTIONS),
                  st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=3).map(".".join))
SET_ITEMS = st.one_of(
    st.text(max_size=25),
    st.tuples(PATHS, st.one_of(st.text(max_size=12), VALUES.map(lambda v: yaml.safe_dump(v).strip()))).map("=".join),
)


@st.composite
def config_docs(draw):
    doc = {}
    for _ in range(draw(st.integers(1, 4))):
        parts = draw(PATHS).split(".")
        node = doc
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = draw(VALUES)
    return doc if draw(st.integers(0, 9)) else draw(VALUES)


@contextmanager
def _in(directory: Path):
    before = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(before)


def _check_outcome(argv: list, workdir: Path) -> str:
    """Exit 2 with one `evoprune:` line, or (input that is valid) the start of real work; nothing written."""
    with mock.patch("evoprune.fitness.build_fitness", _reached), _in(workdir):
        try:
            rc, out, err = _cli(argv)
        except Reached:
            outcome = "valid"
        else:
            if rc == 0 and out.startswith("usage:"):  # an abbreviation of --help, e.g. `--he`
                event("help")
                return "help"
            assert rc == 2, (argv, rc, out, err)
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("evoprune:"), (argv, err)
            outcome = "refused: " + lines[0].split(":")[1].strip()
    event(outcome)
    assert sorted(p.name for p in workdir.iterdir()) == ["c.yaml"], argv  # no run directory was created
    return outcome


FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(doc=config_docs(), items=st.lists(SET_ITEMS, max_size=3))
def test_property_random_configs_and_overrides_exit_2_with_one_line_or_are_valid(tmp_path, doc, items):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(doc, allow_unicode=True))
    _check_outcome(["search", "--config", "c.yaml", "--out", "run", *[f"--set={s}" for s in items]], tmp_path)


FLAGS = ["--config", "--out", "--set", "--resume", "--force", "--quiet", "-h", "--", "c.yaml", "run", "."]


@FUZZ
@given(tokens=st.lists(st.one_of(st.sampled_from(FLAGS), SET_ITEMS), max_size=6))
def test_property_random_command_lines_exit_2_with_one_line_or_are_valid(tmp_path, tokens):
    (tmp_path / "c.yaml").write_text("search: {generations: 1}\n")
    if "-h" in tokens or "--help" in tokens:
        return  # help is not an error (tested above)
    _check_outcome(["search", *tokens], tmp_path)


def test_version_and_config_print_and_exit_0(tmp_path):
    rc, out, err = _cli(["--version"])
    assert rc == 0 and out.strip() == f"evoprune {evoprune.__version__}"
    cfg_file = tmp_path / "x.yaml"
    cfg_file.write_text("search: {generations: 5}\n")
    rc, out, err = _cli(["config", "--config", cfg_file, "--set", "seed=7"])
    assert rc == 0, err
    assert config_from_dict(yaml.safe_load(out)) == load_config(cfg_file, ["seed=7"])
    assert "generations: 5" in out and "seed: 7" in out
    assert "given twice" in _bad_input(["config", "--set", "fitness={steps: 1, steps: 2}"])


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["config"], ["search", "--help"]])
def test_help_version_and_config_do_not_load_torch(argv):
    code = ("import sys; from evoprune.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
