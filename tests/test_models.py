"""Parents by name: every listed architecture builds with the task's head; names are checked with a
suggestion; ImageNet weights offline fail with a message saying where the file goes."""
from __future__ import annotations

from urllib.error import URLError

import pytest
import torch
import torchvision
from torch import nn

from evoprune import ConfigError, load_config
from evoprune.config.archs import ARCHS, BUILTIN_ARCHS, arch_problem, input_channels, known_archs
from evoprune.parent.models import WeightsUnavailable, build_model, classifier_of, replace_classifier
from evoprune.parent.train import build_parent


@pytest.mark.parametrize("arch", ARCHS)
def test_every_listed_arch_builds_with_the_task_head(arch):
    torch.manual_seed(0)
    channels = input_channels(arch) or 1
    model = build_model(arch, 7, channels).eval()
    head = classifier_of(model)
    assert isinstance(head, nn.Linear) and head.out_features == 7
    with torch.no_grad():
        assert model(torch.randn(2, channels, 32, 32)).shape == (2, 7)


def test_googlenet_has_no_aux_heads_and_no_input_transform():
    model = build_model("googlenet", 5, 3)
    assert model.aux1 is None and model.aux2 is None and not model.transform_input
    assert not model.aux_logits


def test_head_replacement_finds_the_last_linear_anywhere():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Sequential(nn.Linear(6, 1000)))
    head = replace_classifier(model, 4)
    assert model[3][0] is head and classifier_of(model) is head and head.in_features == 6
    with pytest.raises(ValueError, match="no nn.Linear"):
        replace_classifier(nn.Conv2d(3, 3, 1), 2)


def test_torchvision_models_need_three_channels_and_no_width():
    with pytest.raises(ValueError, match="3-channel"):
        build_model("resnet18", 10, 1)
    with pytest.raises(ValueError, match="built-in"):
        build_model("resnet18", 10, 3, width=8)
    assert build_model("resnet32", 10, 1, width=4).fc.in_features == 16  # widths 4, 8, 16


def test_known_names_cover_torchvision_and_unknown_ones_get_a_suggestion():
    known = known_archs()
    assert set(BUILTIN_ARCHS) <= set(known) and "efficientnet_b0" in known and "resnet56" in known
    assert arch_problem("convnext_tiny") is None
    assert "did you mean 'resnet18'" in arch_problem("resnet19")
    with pytest.raises(ConfigError, match=r"parent\.arch: expected one of .*did you mean 'mobilenet_v2'"):
        load_config(overrides=["parent.arch=mobilenetv2"])
    assert load_config(overrides=["parent.arch=mnasnet0_5"]).parent.arch == "mnasnet0_5"


@pytest.mark.parametrize("overrides, key", [
    (["parent.pretrained=imagenet"], "parent.pretrained"),  # simple_cnn has no ImageNet weights
    (["parent.arch=resnet18", "parent.width=8"], "parent.width"),
    (["parent.pretrained=cifar"], "parent.pretrained"),
    (["parent.frozen_epochs=-1"], "parent.frozen_epochs"),
])
def test_settings_that_do_not_fit_the_arch_are_config_errors(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides=overrides)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network: torchvision's weight download raises URLError; torch.hub's cache is an empty tmp dir."""
    calls = []

    def refuse(url, *args, **kwargs):
        calls.append(url)
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)
    return calls


def test_pretrained_offline_says_where_to_put_the_weights(offline, tmp_path):
    with pytest.raises(WeightsUnavailable) as info:
        build_model("resnet18", 10, 3, pretrained=True)
    message = str(info.value)
    assert offline == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "parent.weights" in message and "URLError" in message
    assert isinstance(info.value, FileNotFoundError)  # the CLI reports it in one line, exit 2


def test_building_a_parent_to_load_weights_into_never_downloads(offline):
    cfg = load_config(overrides=["parent.arch=resnet18", "parent.pretrained=imagenet"])
    model = build_parent(cfg.parent, (3, 32, 32), 10)  # e.g. load_run(...).parent(): its weights come from parent.pt
    assert classifier_of(model).out_features == 10 and offline == []


def test_pretrained_weights_from_the_hub_cache_need_no_network(offline, tmp_path, monkeypatch):
    """The documented offline route: the weights file in torch.hub's cache is used as is."""
    torch.manual_seed(1)
    imagenet = torchvision.models.mobilenet_v2(weights=None).state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(imagenet, cache / "mobilenet_v2-7ebf99e0.pth")
    real = torch.hub.load_state_dict_from_url  # torch.hub's real cache lookup; a download would fail:

    def cached_only(url, *args, **kwargs):
        monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: offline.append(url))
        return real(url, *args, **kwargs)

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", cached_only)
    model = build_model("mobilenet_v2", 3, 3, pretrained=True)
    assert torch.equal(model.features[0][0].weight, imagenet["features.0.0.weight"])
    assert classifier_of(model).out_features == 3 and offline == []
