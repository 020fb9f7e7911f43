"""Genome: plain-data kept channel sets, JSON round trip, stable keys, hashing, immutability."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from evoprune import Genome

KEPT = {"stem.0": [5, 0, 3], "layers.0.0.conv1": [7, 1], "layers.1.0.conv1": list(range(16))}


def test_indices_are_sorted_int_tuples():
    g = Genome({"a": [3, 1, 2], "b": (0,), "c": range(4)})
    assert g["a"] == (1, 2, 3)
    assert g["b"] == (0,)
    assert g["c"] == (0, 1, 2, 3)
    assert all(isinstance(i, int) for i in g["a"])
    assert list(g) == ["a", "b", "c"]
    assert len(g) == 3
    assert g.widths() == {"a": 3, "b": 1, "c": 4}


def test_json_round_trip():
    g = Genome(KEPT)
    obj = g.to_json()
    assert obj == {"stem.0": [0, 3, 5], "layers.0.0.conv1": [1, 7], "layers.1.0.conv1": list(range(16))}
    back = Genome.from_json(json.loads(json.dumps(obj)))
    assert back == g
    assert back.key() == g.key()
    assert dict(back) == dict(g)
    # to_json is plain data: lists of ints, not tuples
    assert all(isinstance(v, list) for v in obj.values())


def test_json_round_trip_of_a_space_genome(tiny_fitness):
    g = tiny_fitness.space.uniform(keep=0.5)
    back = Genome.from_json(json.loads(json.dumps(g.to_json())))
    assert back == g and back.key() == g.key()
    tiny_fitness.space.validate(back)


def test_from_json_rejects_non_mappings():
    for bad in ([[0, 1]], "stem.0", 3, None):
        with pytest.raises(ValueError, match="mapping"):
            Genome.from_json(bad)


def test_key_equal_for_equal_kept_sets():
    a = Genome({"x": [2, 0, 1], "y": [5]})
    b = Genome({"y": (5,), "x": (0, 1, 2)})  # other insertion order, other index order
    assert a == b
    assert a.key() == b.key()
    assert hash(a) == hash(b)
    assert a.key() == a.key()  # cached value is stable
    assert isinstance(a.key(), str) and len(a.key()) >= 8


@pytest.mark.parametrize("other", [
    {"x": [0, 1], "y": [5]},  # one channel fewer
    {"x": [0, 1, 3], "y": [5]},  # same count, another channel
    {"x": [0, 1, 2], "y": [4]},
    {"x": [0, 1, 2], "z": [5]},  # another group name
    {"x": [0, 1, 2]},  # a group fewer
    {"x": [0, 1, 2], "y": [5], "z": [0]},  # a group more
])
def test_key_differs_for_different_kept_sets(other):
    a = Genome({"x": [0, 1, 2], "y": [5]})
    b = Genome(other)
    assert a != b
    assert a.key() != b.key()


def test_keys_distinct_over_many_genomes():
    genomes = [Genome({"a": range(k), "b": [j]}) for k in range(1, 20) for j in range(20)]
    assert len({g.key() for g in genomes}) == len(genomes)


def test_key_stable_across_processes():
    """The same kept sets give the same key in another interpreter (other hash seed)."""
    g = Genome(KEPT)
    code = ("import json, sys; from evoprune.genome import Genome; "
            "print(Genome(json.loads(sys.argv[1])).key())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(KEPT)], capture_output=True, text=True,
                         env=env, check=True, timeout=120)
    assert out.stdout.strip() == g.key()


def test_hashable_and_usable_as_set_and_dict_key():
    a = Genome({"x": [0, 1]})
    b = Genome({"x": [1, 0]})
    c = Genome({"x": [0]})
    assert len({a, b, c}) == 2
    table = {a: "first"}
    assert table[b] == "first"
    assert c not in table


def test_not_equal_to_plain_dicts():
    g = Genome({"x": [0, 1]})
    assert g != {"x": (0, 1)}
    assert g != "x"


def test_immutable():
    src = {"x": [0, 1, 2]}
    g = Genome(src)
    key = g.key()
    src["x"].append(3)  # mutating the input does not change the genome
    src["y"] = [0]
    assert g["x"] == (0, 1, 2) and "y" not in g
    assert g.key() == key
    with pytest.raises(TypeError):
        g["x"] = (0,)  # type: ignore[index]
    with pytest.raises(TypeError):
        del g["x"]  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        g.extra = 1  # type: ignore[attr-defined]
    assert isinstance(g["x"], tuple)  # kept sets cannot be mutated in place
    # with_group makes a new genome and leaves the original untouched
    h = g.with_group("x", [2, 0])
    assert h["x"] == (0, 2)
    assert g["x"] == (0, 1, 2)
    assert h.key() != g.key()
    assert g.key() == key


def test_repr_names_key_and_widths():
    g = Genome({"x": [0, 1, 2], "y": [4]})
    r = repr(g)
    assert g.key() in r and "x:3" in r and "y:1" in r
