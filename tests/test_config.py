"""Config loading, merging and validation; build_model from preset / dict / file."""

from __future__ import annotations

import json
from typing import Literal

import pytest
import yaml
from torch import nn

import mmfuse
from mmfuse.core.build import ComponentSpec
from mmfuse.core.config import ConfigError, deep_merge, load_config, parse_set_overrides, save_config, validate_config
from mmfuse.core.registry import hookimpl


class ToyModel(nn.Module):
    """A toy model built from a nested component spec."""

    def __init__(
        self,
        width: int,
        encoder: ComponentSpec,
        mode: Literal["a", "b"] = "a",
        dropout: float = 0.1,
        tags: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = mmfuse.build_component("encoder", encoder, where="encoder", width=width)
        self.mode, self.dropout, self.tags = mode, dropout, tags


class ToyEncoder(nn.Module):
    def __init__(self, width: int, depth: int = 1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))


class ToyPlugin:
    @hookimpl
    def mmfuse_models(self):
        return {"toy": ToyModel}

    @hookimpl
    def mmfuse_encoders(self):
        return {"toy-encoder": ToyEncoder}

    @hookimpl
    def mmfuse_presets(self):
        return {
            "toy-small": {"model": "toy", "width": 4, "encoder": {"name": "toy-encoder", "depth": 2},
                          "description": "a small toy"},
        }


@pytest.fixture(autouse=True)
def toy_plugin():
    mmfuse.register_plugin(ToyPlugin(), name="toy-plugin")
    yield
    mmfuse.unregister_plugin("toy-plugin")


def test_build_from_preset_with_overrides():
    model = mmfuse.build_model("toy-small", mode="b", encoder={"depth": 3})
    assert isinstance(model, ToyModel) and model.mode == "b" and len(model.encoder.layers) == 3
    assert model.mmfuse_config["encoder"] == {"name": "toy-encoder", "depth": 3}
    dotted = mmfuse.build_model("toy-small", **{"encoder.depth": 1})
    assert len(dotted.encoder.layers) == 1


def test_build_from_dict_and_files(tmp_path):
    cfg = {"model": "toy", "width": 2, "encoder": "toy-encoder"}
    assert mmfuse.build_model(cfg).encoder.layers[0].in_features == 2
    jpath, ypath = tmp_path / "m.json", tmp_path / "m.yaml"
    jpath.write_text(json.dumps(cfg))
    ypath.write_text(yaml.safe_dump(cfg))
    assert isinstance(mmfuse.build_model(str(jpath)), ToyModel)
    assert isinstance(mmfuse.build_model(ypath), ToyModel)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"width": "4"}, "width: expected int, got str '4'"),
        ({"width": True}, "width: expected int, got bool True"),
        ({"mode": "c"}, "mode: expected one of 'a', 'b', got 'c'"),
        ({"dropout": "high"}, "dropout: expected float"),
        ({"tags": ["x", 3]}, "tags[1]: expected str, got int 3"),
        ({"widht": 3}, "widht: unknown key (did you mean 'width'?)"),
        ({"encoder": {"depth": "2"}}, "encoder.depth: expected int"),
        ({"encoder": {"dept": 2}}, "encoder.dept: unknown key (did you mean 'depth'?)"),
        ({"encoder": {"name": "toy-encodr"}}, "unknown encoder 'toy-encodr' (did you mean 'toy-encoder'?)"),
        ({"encoder": {"width": 8}}, "encoder.width: is set by the enclosing component"),
    ],
)
def test_bad_configs_name_the_key(overrides, message):
    with pytest.raises((ConfigError, LookupError)) as err:
        mmfuse.build_model("toy-small", **overrides)
    assert message in str(err.value)


def test_missing_required_key():
    with pytest.raises(ConfigError, match=r"^width: missing required key"):
        mmfuse.build_model({"model": "toy", "encoder": "toy-encoder"})
    with pytest.raises(ConfigError, match="model: missing required key"):
        mmfuse.build_model({"width": 3})
    with pytest.raises(ConfigError, match=r"encoder.name: missing required key"):
        mmfuse.build_model({"model": "toy", "width": 3, "encoder": {"depth": 1}})


def test_bad_spec_types_and_files(tmp_path):
    with pytest.raises(TypeError, match="preset name, a config dict or a path"):
        mmfuse.build_model(42)
    with pytest.raises(ConfigError, match="does not exist"):
        mmfuse.build_model(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_config(broken)


def test_deep_merge_and_set_overrides():
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    assert deep_merge(base, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}, "d": 3}
    assert deep_merge(base, {"a.c": 7, "e.f": 1}) == {"a": {"b": 1, "c": 7}, "d": 3, "e": {"f": 1}}
    assert base == {"a": {"b": 1, "c": 2}, "d": 3}  # inputs untouched
    with pytest.raises(ConfigError, match="'d' is a int, not a mapping"):
        deep_merge(base, {"d.x": 1})
    assert parse_set_overrides(["fusion.mode=none", "lr=1e-3", "layers=[1, 2]"]) == {
        "fusion.mode": "none", "lr": 1e-3, "layers": [1, 2]}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_set_overrides(["oops"])


def test_save_and_load_roundtrip(tmp_path):
    cfg = {"model": "toy", "width": 2, "encoder": {"name": "toy-encoder"}}
    for suffix in (".json", ".yaml"):
        path = tmp_path / f"cfg{suffix}"
        save_config(cfg, path)
        assert load_config(path) == cfg


def test_validate_config_accepts_optional_and_any():
    def factory(a: int | None = None, b: dict[str, int] | None = None, c=None):
        return None

    validate_config(factory, {"a": None, "b": {"x": 1}, "c": object()}, "f")
    with pytest.raises(ConfigError, match=r"f.b.x: expected int"):
        validate_config(factory, {"b": {"x": "1"}}, "f")


def test_deep_merge_swaps_a_component_spec_with_a_different_name():
    base = {"fusion": {"name": "radm-interaction", "n_layers": 2, "mode": "gated"}, "d_model": 64}
    # same component: options merge
    assert deep_merge(base, {"fusion": {"name": "radm-interaction", "n_layers": 4}})["fusion"] == {
        "name": "radm-interaction", "n_layers": 4, "mode": "gated"}
    # another component: the old options belong to the old block, so the spec is replaced
    assert deep_merge(base, {"fusion": {"name": "film", "hidden_dim": 32}}) == {
        "fusion": {"name": "film", "hidden_dim": 32}, "d_model": 64}
    # dotted keys address a single option, they never swap the spec
    assert deep_merge(base, {"fusion.name": "film"})["fusion"] == {"name": "film", "n_layers": 2, "mode": "gated"}


def test_unknown_key_error_lists_only_configurable_keys():
    def block(d_model: int, n_layers: int = 1, dropout: float = 0.1):
        return d_model

    with pytest.raises(ConfigError) as err:
        validate_config(block, {"d_modle": 8}, "fusion", provided=("d_model",))
    # d_model is injected by the parent, so it is neither suggested nor listed
    assert str(err.value) == "fusion.d_modle: unknown key; valid keys are dropout, n_layers"
