"""Config loading: every bad input is one ConfigError naming the key; good input round-trips."""
from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from evoprune.config import INT_MAX, Config, ConfigError, load_config, save_config, stream_seed
from evoprune.config import reference

DEFAULT = Config().to_dict()
SECTIONS = [k for k, v in DEFAULT.items() if isinstance(v, dict)]
KEYS = [f"{s}.{k}" for s in SECTIONS for k in DEFAULT[s]] + [k for k, v in DEFAULT.items() if not isinstance(v, dict)]


def _load_text(tmp_path, text: str, overrides: list[str] | None = None) -> Config:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path, overrides)


def _error(tmp_path, text: str, overrides: list[str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _load_text(tmp_path, text, overrides)
    assert "\n" not in str(info.value)
    return info.value


# -- bad documents --------------------------------------------------------------------------------
@pytest.mark.parametrize("text, where", [
    ("search: {population: 3\n", "malformed YAML"),
    ("search:\n  population: 3\n population: 4\n", "malformed YAML"),
    ("\tseed: 1\n", "malformed YAML"),
    ("- 1\n- 2\n", "expected a mapping at the top"),
    ("just a string\n", "expected a mapping at the top"),
    ("42\n", "expected a mapping at the top"),
    ("search: 5\n", "search: expected a mapping"),
    ("search: [1, 2]\n", "search: expected a mapping"),
    ("serch: {population: 3}\n", "did you mean 'search'"),
    ("search: {populaton: 3}\n", "did you mean 'search.population'"),
    ("search: {cx_prb: 0.5}\n", "did you mean 'search.cx_prob'"),
    ("1: 2\n", "unknown key"),
    ("seed: 1.5\n", "seed: expected an integer"),
    ("seed: true\n", "seed: expected an integer"),
    ("seed: '3'\n", "seed: expected an integer"),
    ("seed: -1\n", "seed"),
    (f"seed: {INT_MAX + 1}\n", "seed"),
    ("search: {population: 1}\n", "search.population"),
    ("search: {population: 0}\n", "search.population"),
    ("search: {population: 3.0}\n", "search.population: expected an integer"),
    ("search: {generations: -1}\n", "search.generations"),
    ("search: {offspring: 0}\n", "search.offspring"),
    ("search: {cx_prob: 1.5}\n", "search.cx_prob"),
    ("search: {mut_prob: -0.1}\n", "search.mut_prob"),
    ("search: {mut_groups: 0}\n", "search.mut_groups"),
    ("search: {mode: genetic}\n", "search.mode: expected one of"),
    ("search: {tournament_size: 1}\n", "search.tournament_size"),
    ("fitness: {steps: -5}\n", "fitness.steps"),
    ("fitness: {lr: 0}\n", "fitness.lr"),
    ("fitness: {lr: .nan}\n", "fitness.lr: expected a finite number"),
    ("fitness: {lr: .inf}\n", "fitness.lr: expected a finite number"),
    ("fitness: {weight_decay: -.inf}\n", "fitness.weight_decay"),
    (f"fitness: {{lr: {10**400}}}\n", "fitness.lr: expected a finite number"),
    (f"fitness: {{steps: {10**30}}}\n", "fitness.steps"),
    ("fitness: {momentum: 1.0}\n", "fitness.momentum"),
    ("fitness: {alpha: 2}\n", "fitness.alpha"),
    ("fitness: {device: tpu}\n", "fitness.device"),
    ("fitness: {optimizer: [sgd]}\n", "fitness.optimizer"),
    ("population: {ratio_min: 1.0}\n", "population.ratio_min"),
    ("population: {ratio_max: -0.2}\n", "population.ratio_max"),
    ("population: {ratio_min: 0.6, ratio_max: 0.5}\n", "population.ratio_min: expected <= population.ratio_max"),
    ("population: {jitter: 0.7}\n", "population.jitter"),
    ("population: {criteria: []}\n", "population.criteria"),
    ("population: {criteria: l1}\n", "population.criteria: expected a list"),
    ("population: {criteria: [l1, magic]}\n", "population.criteria[1]"),
    ("population: {criteria: [l1, 3]}\n", "population.criteria[1]"),
    ("data: {name: cifar11}\n", "data.name: expected one of"),
    ("data: {val_fraction: 0}\n", "data.val_fraction"),
    ("data: {val_fraction: 0.001}\n", "data.val_fraction"),
    ("data: {test_fraction: 1}\n", "data.test_fraction"),
    ("data: {val_fraction: 0.5, test_fraction: 0.45}\n", "data.test_fraction"),
    ("parent: {arch: vgg}\n", "parent.arch: expected one of"),
    ("parent: {width: 2}\n", "parent.width"),
    ("parent: {width: wide}\n", "parent.width"),
    ("parent: {weights: 5}\n", "parent.weights: expected a string or null"),
    ("parent: {epochs: 0}\n", "parent.epochs"),
    ("space: {min_keep: 0}\n", "space.min_keep"),
    ("space: {round_to: 0}\n", "space.round_to"),
    ("seed: 2020-13-45\n", "malformed YAML"),
    ("a: &a [*a]\n", "unknown key"),
    ("search: {population: &p [*p]}\n", "search.population: expected an integer"),
    ("x: " + "[" * 3000 + "]" * 3000 + "\n", "malformed YAML"),
])
def test_bad_config_is_one_config_error_naming_the_place(tmp_path, text, where):
    assert where in str(_error(tmp_path, text))


def test_missing_file_unreadable_text_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00\x01seed: 1")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(tmp_path / "bin.yaml")


@pytest.mark.parametrize("text", [
    '!!python/object/apply:os.system ["echo hi"]\n',
    'seed: !!python/object/apply:os.system ["echo hi"]\n',
    'search: !!python/object/new:dict {}\n',
])
def test_python_tags_are_refused(tmp_path, text):
    assert "malformed YAML" in str(_error(tmp_path, text))


# -- good documents -------------------------------------------------------------------------------
def test_empty_file_is_the_default(tmp_path):
    assert _load_text(tmp_path, "") == Config()
    assert _load_text(tmp_path, "# only a comment\n") == Config()


def test_crossover_and_mutation_probabilities_are_independent(tmp_path):
    cfg = _load_text(tmp_path, "search: {cx_prob: 0.9, mut_prob: 0.9}\n")
    assert cfg.search.cx_prob + cfg.search.mut_prob > 1
    cfg = _load_text(tmp_path, "search: {cx_prob: 1, mut_prob: 1}\n")
    assert cfg.search.cx_prob == 1.0 and isinstance(cfg.search.cx_prob, float)


def test_scientific_notation_without_a_dot_is_a_number(tmp_path):
    # YAML 1.1 reads `1e-3` as a string; in a float setting it can only mean the number.
    cfg = _load_text(tmp_path, "fitness: {lr: 1e-3, weight_decay: 5E-4}\n", ["fitness.temperature=2e+1"])
    assert (cfg.fitness.lr, cfg.fitness.weight_decay, cfg.fitness.temperature) == (0.001, 0.0005, 20.0)
    assert "search.population: expected an integer" in str(_error(tmp_path, "search: {population: 1e3}\n"))
    assert "finite" in str(_error(tmp_path, "fitness: {lr: 1e999}\n"))


def test_edges_of_ranges_are_accepted(tmp_path):
    cfg = _load_text(tmp_path, "population: {ratio_min: 0.5, ratio_max: 0.5, jitter: 0}\n"
                               "search: {population: 2, generations: 0}\nfitness: {steps: 0}\nseed: 0\n")
    assert cfg.population.ratio_min == cfg.population.ratio_max == 0.5
    assert cfg.search.population == 2


# -- --set overrides ------------------------------------------------------------------------------
@pytest.mark.parametrize("item, where", [
    ("search.generations", "expected KEY=VALUE"),
    ("", "expected KEY=VALUE"),
    ("=3", "expected a key"),
    ("search..population=3", "expected a key"),
    ("search.=3", "expected a key"),
    ("seed.x=1", "'seed' is a setting, not a section"),
    ("search.population.x=1", "'search.population' is a setting, not a section"),
    ("serch.population=3", "did you mean 'search'"),
    ("search.populaton=3", "did you mean 'search.population'"),
    ("search.population=three", "search.population: expected an integer"),
    ("search.population=1", "search.population"),
    ("search=5", "search: expected a mapping"),
    ("fitness.lr=.nan", "fitness.lr"),
    ("seed=!!python/object/apply:os.system [\"echo hi\"]", "seed: expected an integer"),
])
def test_bad_override_is_one_config_error(item, where):
    with pytest.raises(ConfigError) as info:
        load_config(None, [item])
    assert where in str(info.value)


def test_override_into_a_section_replaced_by_a_scalar():
    with pytest.raises(ConfigError, match="search: expected a mapping"):
        load_config(None, ["search=5", "search.population=4"])


def test_overrides_apply_in_order_and_read_values_as_yaml(tmp_path):
    cfg = _load_text(tmp_path, "search: {population: 8}\n", ["search.population=10", "search.population=12",
                                                               "parent.width=null", "population.criteria=[l1, l2]"])
    assert cfg.search.population == 12 and cfg.parent.width is None
    assert cfg.population.criteria == ("l1", "l2")
    assert load_config(None, ["search.generations= 7 "]).search.generations == 7


# -- property: nothing but a Config or a ConfigError ----------------------------------------------
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-10, max_value=100),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=-1, max_value=2),
    st.text(max_size=12), st.sampled_from(["digits", "pareto", "scalar", "l1", "cuda", "sgd", "macs", "", "~"]),
    st.binary(max_size=6), st.dates(),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.one_of(st.text(max_size=8), st.integers(), st.sampled_from(KEYS)),
                                        inner, max_size=3), max_leaves=6)
PATHS = st.one_of(st.sampled_from(KEYS), st.sampled_from(SECTIONS),
                  st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=3).map(".".join),
                  st.tuples(st.sampled_from(KEYS), st.text(min_size=1, max_size=4)).map(".".join))


def _set_path(doc: dict, path: str, value) -> dict:
    parts = path.split(".")
    node = doc
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return doc


@st.composite
def mutated_configs(draw):
    """A valid config with a few keys replaced, added or removed; sometimes a whole other document."""
    if draw(st.integers(0, 9)) == 0:
        return draw(VALUES)
    doc = copy.deepcopy(DEFAULT)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(PATHS)
        if draw(st.integers(0, 5)) == 0:
            section = doc.get(path.split(".")[0])
            if isinstance(section, dict) and section:
                section.pop(draw(st.sampled_from(list(section))), None)
            continue
        _set_path(doc, path, draw(VALUES))
    return doc


def _check_accepted(cfg: Config, tmp_path) -> None:
    """Whatever is accepted is in range, finite and survives a save/load round trip unchanged."""
    for section in dataclasses.fields(cfg):
        value = getattr(cfg, section.name)
        items = dataclasses.asdict(value).items() if dataclasses.is_dataclass(value) else [(section.name, value)]
        for _, v in items:
            if isinstance(v, float):
                assert math.isfinite(v)
            if isinstance(v, int) and not isinstance(v, bool):
                assert abs(v) <= INT_MAX
    assert cfg.search.population >= 2 and cfg.population.ratio_min <= cfg.population.ratio_max
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(doc=mutated_configs())
def test_property_mutated_config_files_give_a_config_or_a_config_error(tmp_path_factory, doc):
    tmp = tmp_path_factory.getbasetemp()
    path = tmp / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)
        event("ConfigError")
        return
    event("valid")
    _check_accepted(cfg, tmp)


@SETTINGS
@given(text=st.one_of(st.text(max_size=80),
                      st.lists(st.sampled_from(["search:", "  population:", " 3", "\n", "- ", "{", "}", "[", "]",
                                                ":", "&a", "*a", "!!", "!!python/object:os.system", "'", '"',
                                                "seed: ", "fitness: {lr: ", ".nan", "\t", "#", "---", "..."]),
                               max_size=12).map("".join)))
def test_property_arbitrary_text_gives_a_config_or_a_config_error(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "fuzz-text.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        load_config(path)
        event("valid")
    except ConfigError as exc:
        assert "\n" not in str(exc)
        event("ConfigError")


@SETTINGS
@given(items=st.lists(st.one_of(
    st.text(max_size=30),
    st.tuples(PATHS, st.one_of(st.text(max_size=15), VALUES.map(lambda v: yaml.safe_dump(v).strip()))).map("=".join),
), min_size=1, max_size=4))
def test_property_arbitrary_overrides_give_a_config_or_a_config_error(tmp_path_factory, items):
    try:
        cfg = load_config(None, items)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        event("ConfigError")
        return
    event("valid")
    _check_accepted(cfg, tmp_path_factory.getbasetemp())


@pytest.mark.parametrize("text, key, lines", [
    ("seed: 1\nseed: 2\n", "seed", "lines 1 and 2"),
    ("fitness:\n  steps: 10\n  lr: 0.1\n  steps: 20\n", "fitness.steps", "lines 2 and 4"),
    ("population:\n  criteria: [l1]\nfitness: {steps: 3}\nfitness: {lr: 0.1}\n", "fitness", "lines 3 and 4"),
])
def test_a_key_given_twice_is_an_error_naming_it(tmp_path, text, key, lines):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^{key}: given twice in .*dup.yaml \\({lines}\\)"):
        load_config(path)


def test_keys_merged_from_an_anchor_may_be_overridden(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("fitness: &f {steps: 3, lr: 0.1}\ndistill:\n  <<: {epochs: 2, lr: 0.2}\n  lr: 0.3\n")
    cfg = load_config(path)
    assert cfg.distill.lr == 0.3 and cfg.distill.epochs == 2 and cfg.fitness.steps == 3


def test_a_key_given_twice_in_a_set_value_is_an_error():
    with pytest.raises(ConfigError, match="^fitness.steps: given twice in the value of --set"):
        load_config(overrides=["fitness={steps: 1, steps: 2}"])


def test_a_loaded_config_cannot_change():
    cfg = load_config(overrides=["population.criteria=[l1, taylor]"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.search.population = 3  # type: ignore[misc]
    assert cfg.population.criteria == ("l1", "taylor")  # lists are held as tuples
    assert cfg.to_dict()["population"]["criteria"] == ["l1", "taylor"]  # and written as lists
    changed = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, population=3))
    assert changed.search.population == 3 and cfg.search.population == 16


def test_readme_config_reference_is_generated_from_the_fields_docs():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert reference.readme_section(readme) == reference.section(), \
        "README's config reference drifted: run python -m evoprune.config.reference --write README.md"
    keys = [key for key, _, _ in reference.rows()]
    assert len(keys) == len(set(keys)) and "fitness.kd" in keys and "distill.dml" in keys
    assert all(doc for _, _, doc in reference.rows())  # every field says what it is for


@pytest.mark.parametrize("overrides, key", [
    (["evaluator.backend=ray", "evaluator.gpus_per_worker=1.5"], "evaluator.gpus_per_worker"),
    (["evaluator.backend=ray", "fitness.device=cuda"], "evaluator.gpus_per_worker"),
    (["evaluator.backend=ray", "fitness.device=cpu", "evaluator.gpus_per_worker=0.5"], "evaluator.gpus_per_worker"),
])
def test_ray_gpu_share_rules_fail_when_the_config_loads(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides)
    assert err.value.key == key


def test_random_streams_are_named_and_distinct_per_index():
    assert stream_seed(5, "fitness.subset") != stream_seed(5, "space.calibration")
    assert stream_seed(5, "distill.student", 1) == stream_seed(5, "distill.student", 0) + 1
    with pytest.raises(KeyError, match="unknown random stream"):
        stream_seed(0, "no.such.purpose")
