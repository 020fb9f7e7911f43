"""README's table of torchvision models says what evoprune does with each: one model of each family is searched
again here, as a user would (experiments/torchvision_table.py; `python experiments/torchvision_table.py`
rewrites the whole table)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
torchvision_table = pytest.importorskip("torchvision_table")

# One of each family, the cheaper ones; a family's other sizes share its structure.
FAMILIES = ["alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "mobilenet_v3_small", "regnet_x_400mf",
            "resnet18", "resnext50_32x4d", "shufflenet_v2_x0_5", "squeezenet1_1", "vgg11_bn"]


def readme_rows() -> dict[str, tuple[str, int, str]]:
    """{model: (yes/no, input size, what the row says)} from README's generated table."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index(torchvision_table.BEGIN):text.index(torchvision_table.END)]
    rows = {}
    for m in re.finditer(r"^\| `([\w.]+)` \| (yes|no) \((\d+) px\) \| (.*) \|$", table, re.M):
        rows[m.group(1)] = (m.group(2), int(m.group(3)), m.group(4))
    return rows


def test_the_table_has_a_row_for_every_torchvision_classification_model():
    rows = readme_rows()
    assert set(rows) == set(torchvision_table.all_models())


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_the_row_says_what_the_model_does(name):
    said, size, text = readme_rows()[name]
    result = torchvision_table.check(name)
    assert ("yes" if result["searches"] else "no", result["size"]) == (said, size), result
    if result["searches"]:
        assert f"{result['parent_params'] / 1e6:.1f}M params, {result['groups']} groups" in text
    else:
        assert result["reason"].replace("|", "/")[:60] == text[:60]


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").environ.get("EVOPRUNE_TORCHVISION_TABLE"),
                    reason="an hour or more: EVOPRUNE_TORCHVISION_TABLE=1 rewrites README's whole table")
def test_write_the_whole_table():
    results = [torchvision_table.check(name) for name in torchvision_table.all_models()]
    torchvision_table.write(results)
    assert set(readme_rows()) == set(torchvision_table.all_models())
