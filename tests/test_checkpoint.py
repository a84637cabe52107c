"""save_pretrained / load_pretrained round trip and atomicity."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from torch import nn

import mmfuse
from mmfuse.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_pretrained, save_pretrained
from mmfuse.core.registry import hookimpl


class Tied(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.a = nn.Linear(width, width)
        self.b = nn.Linear(width, width)
        self.b.weight = self.a.weight  # tied weights must survive the round trip


class Plugin:
    @hookimpl
    def mmfuse_models(self):
        return {"ckpt-tied": Tied}


@pytest.fixture(autouse=True)
def plugin():
    mmfuse.register_plugin(Plugin(), name="ckpt-plugin")
    yield
    mmfuse.unregister_plugin("ckpt-plugin")


def test_roundtrip(tmp_path):
    model = mmfuse.build_model({"model": "ckpt-tied", "width": 3})
    save_pretrained(model, tmp_path / "ck")
    saved = json.loads((tmp_path / "ck" / CONFIG_NAME).read_text())
    # the config, plus the third-party components it needs (changed with the provenance record)
    assert {k: v for k, v in saved.items() if k != "_mmfuse"} == {"model": "ckpt-tied", "width": 3}
    assert saved["_mmfuse"]["plugins"] == [{"kind": "model", "name": "ckpt-tied", "plugin": "ckpt-plugin",
                                            "distribution": None}]
    loaded = load_pretrained(tmp_path / "ck")
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert loaded.b.weight is loaded.a.weight


def test_loading_without_the_plugin_names_it(tmp_path):
    from mmfuse.core.provenance import MissingPluginError

    save_pretrained(mmfuse.build_model({"model": "ckpt-tied", "width": 3}), tmp_path / "ck")
    mmfuse.unregister_plugin("ckpt-plugin")
    try:
        with pytest.raises(MissingPluginError, match="model 'ckpt-tied' from plugin 'ckpt-plugin'.*not installed"):
            load_pretrained(tmp_path / "ck")
    finally:
        mmfuse.register_plugin(Plugin(), name="ckpt-plugin")


def test_interrupted_save_keeps_previous(tmp_path, monkeypatch):
    model = mmfuse.build_model({"model": "ckpt-tied", "width": 3})
    save_pretrained(model, tmp_path)
    before = (tmp_path / WEIGHTS_NAME).read_bytes()

    def boom(module, filename, *args, **kwargs):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr("mmfuse.models.checkpoint.st_save_model", boom)
    with torch.no_grad():
        model.a.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        save_pretrained(model, tmp_path)
    assert (tmp_path / WEIGHTS_NAME).read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_saved_files_get_the_umask_mode_or_keep_the_replaced_files_mode(tmp_path):
    model = mmfuse.build_model({"model": "ckpt-tied", "width": 3})
    old_umask = os.umask(0o027)
    try:
        save_pretrained(model, tmp_path / "ck")
    finally:
        os.umask(old_umask)
    weights, config = tmp_path / "ck" / WEIGHTS_NAME, tmp_path / "ck" / CONFIG_NAME
    assert stat.S_IMODE(weights.stat().st_mode) == 0o640 and stat.S_IMODE(config.stat().st_mode) == 0o640
    weights.chmod(0o604)
    save_pretrained(model, tmp_path / "ck")
    assert stat.S_IMODE(weights.stat().st_mode) == 0o604


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="config: the model has no `mmfuse_config`"):
        save_pretrained(nn.Linear(2, 2), tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(tmp_path)
