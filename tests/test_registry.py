"""The pluggy registry: built-ins, in-process plugins, entry-point plugins, error messages."""

from __future__ import annotations

import warnings

import pytest
from torch import nn

import mmfuse
from mmfuse.core.registry import (
    KINDS,
    DuplicateComponentError,
    Registry,
    UnknownComponentError,
    hookimpl,
)


class TinyFusion(nn.Module):
    """A test fusion block."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.proj = nn.Linear(width, width)


class FusionPlugin:
    @hookimpl
    def mmfuse_fusions(self):
        return {"test-tiny-fusion": TinyFusion, "test-other-fusion": TinyFusion}


class ClashingPlugin:
    @hookimpl
    def mmfuse_fusions(self):
        return {"test-tiny-fusion": TinyFusion}


def test_builtin_plugins_registered_through_hooks():
    reg = Registry(load_entry_points=False)
    plugins = reg.plugins()
    for mod in ("mmfuse.encoders", "mmfuse.fusion", "mmfuse.heads", "mmfuse.losses", "mmfuse.models"):
        assert mod in plugins
    listing = mmfuse.list_components()
    assert set(listing) == set(KINDS)
    assert all(isinstance(v, list) for v in listing.values())


def test_register_plugin_in_process_and_lookup():
    name = mmfuse.register_plugin(FusionPlugin(), name="test-fusion-plugin")
    try:
        assert "test-tiny-fusion" in mmfuse.list_components("fusion")
        info = mmfuse.get_component("fusion", "test-tiny-fusion")
        assert info.plugin == "test-fusion-plugin" and info.factory is TinyFusion
        assert info.summary == "A test fusion block."
        block = mmfuse.build_component("fusion", {"name": "test-tiny-fusion", "width": 3})
        assert block.proj.in_features == 3
    finally:
        mmfuse.unregister_plugin(name)
    assert "test-tiny-fusion" not in mmfuse.list_components("fusion")


def test_unknown_name_lists_known_and_suggests():
    mmfuse.register_plugin(FusionPlugin(), name="test-fusion-plugin")
    try:
        with pytest.raises(UnknownComponentError) as err:
            mmfuse.get_component("fusion", "test-tiny-fuson")
        msg = str(err.value)
        assert "unknown fusion 'test-tiny-fuson'" in msg
        assert "(did you mean 'test-tiny-fusion'?)" in msg
        assert "test-other-fusion" in msg  # the known names are listed
        with pytest.raises(UnknownComponentError, match=r"\(did you mean 'test-tiny-fusion'\?\)"):
            mmfuse.get_component("fusion", "Test-Tiny-Fusion")  # suggestions ignore case
    finally:
        mmfuse.unregister_plugin("test-fusion-plugin")


def test_unknown_names_are_config_errors_with_one_message_format():
    # the same helper answers every kind, so models, data sets and tasks fail alike
    for kind, name, message in (("model", "RADM", "unknown model 'RADM' (did you mean 'radm'?)"),
                                ("dataset", "twiter2015", "unknown data set 'twiter2015' (did you mean 'twitter2015'?)"),
                                ("task", "jmsa", "unknown task 'jmsa' (did you mean 'jmasa'?)")):
        with pytest.raises(mmfuse.ConfigError) as err:
            mmfuse.get_component(kind, name)
        assert str(err.value).startswith(message), str(err.value)
        assert isinstance(err.value, UnknownComponentError) and isinstance(err.value, KeyError)


def test_names_are_unique_across_kinds():
    names = [name for names in mmfuse.list_components().values() for name in names]
    assert len(names) == len(set(names))

    class Clash:  # a data set named like a built-in preset
        @mmfuse.hookimpl
        def mmfuse_datasets(self):
            return {"radm-tiny": lambda split, data_dir=None: None}

    with pytest.raises(DuplicateComponentError, match="'radm-tiny' is registered as a preset by 'mmfuse.models' "
                                                      "and as a dataset by 'clash'"):
        mmfuse.register_plugin(Clash(), name="clash")
    assert "clash" not in mmfuse.get_registry().plugins()


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="kind must be one of"):
        mmfuse.list_components("widget")


def test_duplicate_name_from_two_plugins_names_both():
    mmfuse.register_plugin(FusionPlugin(), name="first-plugin")
    try:
        with pytest.raises(DuplicateComponentError) as err:
            mmfuse.register_plugin(ClashingPlugin(), name="second-plugin")
        msg = str(err.value)
        assert "'test-tiny-fusion'" in msg and "'first-plugin'" in msg and "'second-plugin'" in msg
        # the clashing plugin was rolled back; the registry still works
        assert "second-plugin" not in mmfuse.get_registry().plugins()
        assert mmfuse.get_component("fusion", "test-tiny-fusion").plugin == "first-plugin"
    finally:
        mmfuse.unregister_plugin("first-plugin")


def test_hook_must_return_mapping():
    class Bad:
        @hookimpl
        def mmfuse_heads(self):
            return ["not", "a", "mapping"]

    reg = Registry(load_entry_points=False)
    with pytest.raises(Exception, match="must return a mapping"):
        reg.register_plugin(Bad(), name="bad")


ENTRY_POINT_PLUGIN = '''
from torch import nn
from mmfuse.core.registry import hookimpl

class EPHead(nn.Module):
    """Head contributed through an entry point."""
    def __init__(self, n: int = 2):
        super().__init__()
        self.fc = nn.Linear(n, n)

@hookimpl
def mmfuse_heads():
    return {"ep-test-head": EPHead}
'''


def test_entry_point_plugin_is_loaded_lazily(installed_plugin_dir):
    installed_plugin_dir("mmfuse-ep-test", "mmfuse_ep_test_plugin", ENTRY_POINT_PLUGIN, ep_name="ep-test")
    reg = Registry()  # a fresh registry sees the newly "installed" distribution
    assert reg.pm.get_plugin("ep-test") is None  # nothing loaded before the first lookup
    info = reg.get("head", "ep-test-head")
    assert info.plugin == "ep-test"
    assert info.factory(n=3).fc.in_features == 3


def test_broken_entry_point_warns_and_is_skipped(installed_plugin_dir):
    installed_plugin_dir("mmfuse-broken", "mmfuse_broken_plugin", "raise ImportError('boom')\n", ep_name="broken")
    reg = Registry()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = reg.names("model")
    assert isinstance(names, list)
    messages = [str(w.message) for w in caught]
    assert any("could not load plugin 'broken'" in m and "boom" in m for m in messages)


def test_duplicate_between_entry_point_plugins(installed_plugin_dir):
    installed_plugin_dir("mmfuse-dup-a", "mmfuse_dup_a", ENTRY_POINT_PLUGIN, ep_name="dup-a")
    installed_plugin_dir("mmfuse-dup-b", "mmfuse_dup_b", ENTRY_POINT_PLUGIN, ep_name="dup-b")
    reg = Registry()
    with pytest.raises(DuplicateComponentError) as err:
        reg.get("head", "ep-test-head")
    assert "'dup-a'" in str(err.value) and "'dup-b'" in str(err.value)
