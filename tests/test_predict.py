"""`evoprune predict`: an export classifies image files as the model does on the same inputs prepared by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from evoprune import load_config
from evoprune.data.task import load_task
from evoprune.deploy.export import load_exported


@pytest.fixture(scope="module")
def export_dir(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "exp"
    rc, _, err = run_cli(["export", tiny_run, "--pick", 0, "--out", out, "--runs", 1])
    assert rc == 0, err
    return out


def _images(tiny_run, folder, n: int = 5) -> list:
    """Test-split digits written as 8-bit grayscale PNG files, as a user's files would be."""
    data = load_task(load_config(tiny_run / "config.yaml"))
    prep = data.preprocessing
    folder.mkdir()
    paths = []
    for i in range(n):
        pixels = (data.test_x[i, 0].numpy() * prep.std[0] + prep.mean[0]).clip(0, 1)  # back to [0, 1]
        path = folder / f"digit{i}.png"
        Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L").save(path)
        paths.append(path)
    return paths


def test_predict_matches_the_model_on_inputs_prepared_by_hand(tiny_run, export_dir, tmp_path):
    paths = _images(tiny_run, tmp_path / "imgs")
    meta = json.loads((export_dir / "export.json").read_text())
    prep = meta["preprocessing"]
    assert prep["mode"] == "L" and prep["size"] == [8, 8] and len(prep["mean"]) == len(prep["std"]) == 1
    assert meta["class_names"] == [str(c) for c in range(10)] and prep["class_names"] == meta["class_names"]
    rc, out, err = run_cli(["predict", export_dir, tmp_path / "imgs", "--top-k", 2])
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == len(paths)
    model = load_exported(export_dir)
    for path, line in zip(paths, lines):
        pixels = np.asarray(Image.open(path), dtype=np.float32) / 255.0  # by hand, as export.json says
        x = torch.from_numpy((pixels - prep["mean"][0]) / prep["std"][0])[None, None]
        assert torch.equal(model.preprocess(path), x)
        with torch.no_grad():
            probs = torch.softmax(model(x), 1)[0]
        best = int(probs.argmax())
        assert line.startswith(f"{path}: {meta['class_names'][best]} {float(probs[best]):.3f}, "), line


def test_predict_bad_files_are_one_line_exit_2(export_dir, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    Image.fromarray(np.zeros((12, 10), dtype=np.uint8)).save(tmp_path / "big.png")
    for target, says in [(tmp_path / "notes.png", "not an image file"), (tmp_path / "big.png", "10x12 pixels"),
                         (tmp_path / "missing.png", "no such file")]:
        rc, out, err = run_cli(["predict", export_dir, target])
        assert rc == 2 and says in err and len(err.strip().splitlines()) == 1, err
    rc, out, err = run_cli(["predict", tmp_path, tmp_path / "big.png"])
    assert rc == 2 and "not an evoprune export" in err
