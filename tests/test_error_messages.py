"""Error messages keep the config path and suggest names case-insensitively (one lookup helper for every kind)."""

from __future__ import annotations

import pytest

import mmfuse
from mmfuse import ConfigError, UnknownComponentError


def test_a_components_own_check_names_its_config_path():
    with pytest.raises(ConfigError, match=r"^fusion\.n_heads: must divide d_model=64, got 5$"):
        mmfuse.build_model("radm-tiny", fusion={"n_heads": 5})
    with pytest.raises(ConfigError, match=r"^text_encoder: hf-text max_length: 1000 exceeds"):
        mmfuse.build_model("radm-tiny", text_encoder={"max_length": 1000})
    # nested: the relation module's own encoder inside JML
    with pytest.raises(ConfigError, match=r"^relation\.text_encoder: hf-text config\.hiden_size: not a bert config "
                                          r"key \(did you mean 'hidden_size'\?\)"):
        mmfuse.build_model("jml-tiny", **{"relation.text_encoder.config": {"hiden_size": 8}})


def test_unknown_component_names_the_key():
    with pytest.raises(UnknownComponentError, match=r"^fusion\.name: unknown fusion 'flim'; known: radm-interaction, "):
        mmfuse.build_model("radm-tiny", fusion={"name": "flim"})
    with pytest.raises(UnknownComponentError, match=r"heads\.name: unknown head 'clasifier' \(did you mean "
                                                    r"'classifier'\?\)"):
        mmfuse.build_model("radm-tiny", heads={"name": "clasifier", "tasks": {"s": 2}})


def test_suggestions_ignore_case_and_list_the_known_names():
    with pytest.raises(UnknownComponentError, match=r"unknown preset 'RADM-tiny' \(did you mean 'radm-tiny'\?\)"):
        mmfuse.build_model("RADM-tiny")
    with pytest.raises(UnknownComponentError, match=r"\(did you mean 'jml-tiny'\?\)"):
        mmfuse.build_model("JML-TINY")
    with pytest.raises(UnknownComponentError, match=r"unknown loss 'ITCC' \(did you mean 'itc'\?\); known: itc, itm$"):
        mmfuse.get_component("loss", "ITCC")
