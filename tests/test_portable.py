"""Portable model folders: build → save → delete every source folder → load → identical outputs.

Covers radm-tiny with a local HF text model (a tiny BERT saved with ``save_pretrained``) and a
timm ``checkpoint_path``, jml-tiny with a relation checkpoint, and (in test_plugin_example.py) a
plugin model. No network (the ``no_network`` fixture), nothing unpickled (``torch.load`` fails).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from radm_support import TINY_BERT, no_network, shape_image  # noqa: F401 - fixture
from safetensors.torch import save_file

import mmfuse
from mmfuse.models.checkpoint import CONFIG_NAME, load_pretrained, save_pretrained

TEXTS = ["look at this lovely triangle", "awful circle today"]


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load called: a model folder must load without unpickling")

    monkeypatch.setattr(torch, "load", refuse)


def _local_bert(folder) -> None:
    """A tiny BERT and its tokenizer saved the way a user saves a downloaded model."""
    from transformers import BertConfig, BertModel

    from mmfuse.encoders.tokenizer import build_wordpiece_tokenizer

    tokenizer = build_wordpiece_tokenizer(["quokka"], model_max_length=32)
    torch.manual_seed(1)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), **TINY_BERT))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _radm_batch(model):
    images = [shape_image((200, 40, 40), shape="triangle"), shape_image((40, 80, 220), shape="circle")]
    return model.get_processor(train=False)(TEXTS, images)


def _outputs(model, batch) -> dict[str, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        out = model(batch)
    if hasattr(out, "logits"):
        return {k: v for k, v in out.logits.items()}
    return {"start": out.start_logits, "end": out.end_logits, "polarity": out.polarity_logits,
            "relation": out.relation_prob}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.mark.usefixtures("no_network", "no_unpickling")
def test_radm_with_local_hf_text_and_timm_checkpoint_survives_deleting_its_sources(tmp_path):
    import timm

    bert = tmp_path / "sources" / "tiny-bert"
    _local_bert(bert)
    vit_file = tmp_path / "sources" / "vit.safetensors"
    torch.manual_seed(2)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64, patch_size=8,
                            embed_dim=64, depth=2, num_heads=2)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(vit_file))

    torch.manual_seed(0)
    model = mmfuse.build_model("radm-tiny", text_encoder={"path": str(bert), "config": None, "max_length": 32},
                               image_encoder={"checkpoint_path": str(vit_file)})
    torch.testing.assert_close(model.image_encoder.model.pos_embed, vit.pos_embed)  # the checkpoint was read
    batch = _radm_batch(model)
    expected = _outputs(model, batch)
    model.save_pretrained(tmp_path / "saved")
    shutil.rmtree(tmp_path / "sources")

    config = json.loads((tmp_path / "saved" / CONFIG_NAME).read_text())
    assert str(tmp_path) not in json.dumps(config)  # no absolute path left
    assert config["text_encoder"]["path"] is None and config["text_encoder"]["tokenizer"] == "encoders.text_encoder"
    assert "checkpoint_path" not in config["image_encoder"]
    assert (tmp_path / "saved" / "encoders.text_encoder" / "tokenizer.json").is_file()

    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "saved", moved)  # relative references resolve against the folder
    loaded = mmfuse.from_pretrained(moved)
    assert type(loaded) is type(model)
    assert loaded.text_encoder.tokenizer.get_vocab() == model.text_encoder.tokenizer.get_vocab()
    _assert_same(expected, _outputs(loaded, _radm_batch(loaded)))
    # the class method checks the architecture
    assert isinstance(type(model).from_pretrained(moved), type(model))
    from mmfuse.models.jml.model import JML

    with pytest.raises(TypeError, match="holds a RADM"):
        JML.from_pretrained(moved)


@pytest.mark.usefixtures("no_network", "no_unpickling")
def test_jml_with_relation_checkpoint_survives_deleting_the_relation_folder(tmp_path):
    from jml_support import TWEETS, make_span_batch

    torch.manual_seed(0)
    relation = mmfuse.build_model("jml-relation-tiny")
    relation_dir = tmp_path / "relation"
    mmfuse.save_pretrained(relation, relation_dir)
    torch.manual_seed(1)
    model = mmfuse.build_model("jml-tiny", relation=None, relation_checkpoint=str(relation_dir))
    for key, value in relation.state_dict().items():  # the checkpoint was read
        torch.testing.assert_close(model.relation.state_dict()[key], value, rtol=0, atol=0)
    size = model.encoders.image_encoder.image_size[0]
    batch = make_span_batch(model.encoders.text_encoder.tokenizer, TWEETS[:3], image_size=size)
    expected = _outputs(model, batch)
    save_pretrained(model, tmp_path / "jml")
    shutil.rmtree(relation_dir)

    config = json.loads((tmp_path / "jml" / CONFIG_NAME).read_text())
    assert "relation_checkpoint" not in config
    assert config["relation"]["text_encoder"]["name"] == "hf-text"
    loaded = load_pretrained(tmp_path / "jml")
    _assert_same(expected, _outputs(loaded, batch))


def test_relative_tokenizer_of_a_nested_saved_model_is_rewritten(tmp_path):
    """A relation module saved from a path encoder references its tokenizer relative to its own folder;
    the JML that loads it must copy the tokenizer into its own folder."""
    bert = tmp_path / "bert"
    _local_bert(bert)
    text = {"name": "hf-text", "path": str(bert), "config": None, "words": None, "max_length": 32}
    torch.manual_seed(0)
    relation = mmfuse.build_model("jml-relation-tiny", text_encoder=text)
    mmfuse.save_pretrained(relation, tmp_path / "relation")
    torch.manual_seed(0)
    jml = mmfuse.build_model("jml-tiny", text_encoder=text, relation=None,
                             relation_checkpoint=str(tmp_path / "relation"))
    mmfuse.save_pretrained(jml, tmp_path / "jml")
    shutil.rmtree(tmp_path / "relation")
    shutil.rmtree(bert)
    config = json.loads((tmp_path / "jml" / CONFIG_NAME).read_text())
    assert config["relation"]["text_encoder"]["tokenizer"] == "relation.encoders.text_encoder"
    assert (tmp_path / "jml" / "relation.encoders.text_encoder" / "tokenizer.json").is_file()
    loaded = load_pretrained(tmp_path / "jml")
    assert loaded.relation.text_encoder.tokenizer.get_vocab() == jml.relation.text_encoder.tokenizer.get_vocab()


def test_load_pretrained_accepts_a_run_folder(tmp_path):
    torch.manual_seed(0)
    model = mmfuse.build_model("radm-tiny")
    save_pretrained(model, tmp_path / "run" / "model")
    batch = _radm_batch(model)
    _assert_same(_outputs(model, batch), _outputs(load_pretrained(tmp_path / "run"), batch))
    with pytest.raises(FileNotFoundError, match="no config.json; neither it nor .* holds a trained model .the folder does not exist"):
        load_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="expected a model folder written by save_pretrained"):
        load_pretrained(tmp_path / "empty")
