"""Text / image encoders, the offline tokenizer and the multimodal processor."""

from __future__ import annotations

import pytest
import torch
from radm_support import TINY_BERT, TINY_VIT, no_network, one_thread, shape_image  # noqa: F401 (fixtures)
from safetensors.torch import save_file

import mmfuse
from mmfuse.core.config import ConfigError
from mmfuse.data.processing import MultimodalProcessor, build_image_transform
from mmfuse.encoders.tokenizer import (
    DEFAULT_WORDS,
    SPECIAL_TOKENS,
    build_vocabulary,
    build_wordpiece_tokenizer,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SYNTHETIC_CAPTION_WORDS = ["look", "at", "this", "check", "out", "here", "is", "i", "saw", "behold", "today",
                           "again", "now", "circle", "square", "triangle", "awful", "terrible", "sad", "ugly",
                           "plain", "ordinary", "average", "simple", "lovely", "great", "wonderful", "happy"]


def text_encoder(**options):
    return mmfuse.build_component("encoder", {"name": "hf-text", "config": TINY_BERT, "max_length": 16, **options})


def vit_encoder(**options):
    return mmfuse.build_component("encoder", {"name": "timm-vit", **TINY_VIT, **options})


# -- offline tokenizer ------------------------------------------------------------------------
def test_vocabulary_is_deterministic_and_appending_words_keeps_ids():
    base = build_vocabulary()
    assert build_vocabulary() == base
    assert [base[t] for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    extended = build_vocabulary(["Zebra", "lovely", "quokka"])
    assert {t: extended[t] for t in base} == base  # existing ids unchanged
    assert extended["zebra"] == len(base) and extended["quokka"] == len(base) + 1  # lower-cased, dupes skipped
    with pytest.raises(ValueError, match=r"words\[0\]: expected a non-empty word without whitespace"):
        build_vocabulary(["two words"])


def test_tokenizer_bert_conventions_and_synthetic_words_are_whole_tokens():
    tok = build_wordpiece_tokenizer(model_max_length=16)
    for word in SYNTHETIC_CAPTION_WORDS + ["red", "purple", "blue", "gray", "green", "yellow"]:
        assert word in DEFAULT_WORDS
        assert tok.tokenize(word) == [word]
    enc = tok("Look at this LOVELY triangle!")
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == ["[CLS]", "look", "at", "this", "lovely", "triangle", "!",
                                                          "[SEP]"]
    assert enc["token_type_ids"] == [0] * 8
    # words outside the vocabulary are spelled with ## pieces, never [UNK]
    assert tok.tokenize("quokka") == ["q", "##u", "##o", "##k", "##k", "##a"]
    pair = tok("circle", "square")
    assert pair["token_type_ids"] == [0, 0, 0, 1, 1]
    batch = tok(["circle", "a very long text " * 10], padding="longest", truncation=True, max_length=16,
                return_tensors="pt")
    assert batch["input_ids"].shape == (2, 16) and batch["attention_mask"][0].sum() == 3
    assert tok.decode(tok("quokka")["input_ids"], skip_special_tokens=True) == "quokka"


# -- hf-text ------------------------------------------------------------------------------------
def test_hf_text_from_config_returns_features():
    enc = text_encoder()
    assert enc.vocab_size == len(enc.tokenizer) and enc.out_dim == 32 and enc.max_length == 16
    batch = enc.tokenizer(["lovely circle", "look at this lovely triangle today"], padding=True, return_tensors="pt")
    features = enc(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert features.tokens.shape == (2, 8, 32)
    assert features.mask.dtype == torch.bool and features.mask.tolist()[0] == [True] * 4 + [False] * 4
    assert torch.equal(features.pooled, features.tokens[:, 0])


def test_hf_text_config_errors():
    with pytest.raises(ConfigError, match=r"hf-text config.num_hiden_layers: not a bert config key "
                                          r"\(did you mean 'num_hidden_layers'\?\)"):
        text_encoder(config={**TINY_BERT, "num_hiden_layers": 3})
    with pytest.raises(ConfigError, match=r"config.vocab_size: 10 is smaller than the offline tokenizer's vocabulary"):
        text_encoder(config={**TINY_BERT, "vocab_size": 10})
    with pytest.raises(ConfigError, match="max_length: 64 exceeds the model's max_position_embeddings \\(32\\)"):
        text_encoder(max_length=64)
    with pytest.raises(ConfigError, match="give exactly one of `path`"):
        mmfuse.build_component("encoder", {"name": "hf-text"})


@pytest.mark.usefixtures("no_network")
def test_hf_text_hub_name_is_refused_without_network():
    with pytest.raises(ConfigError, match=r"path: 'bert-base-uncased' is not a local directory. "
                                          r"mmfuse never downloads"):
        mmfuse.build_component("encoder", {"name": "hf-text", "path": "bert-base-uncased"})


@pytest.mark.usefixtures("no_network")
def test_hf_text_from_local_directory(tmp_path):
    torch.manual_seed(0)
    original = text_encoder().eval()
    folder = tmp_path / "tiny-bert"
    original.model.save_pretrained(folder)
    original.tokenizer.save_pretrained(folder)
    loaded = mmfuse.build_component("encoder", {"name": "hf-text", "path": str(folder), "max_length": 16}).eval()
    texts = ["look at this lovely triangle", "quokka"]
    batch = loaded.tokenizer(texts, padding=True, return_tensors="pt")
    assert torch.equal(batch["input_ids"], original.tokenizer(texts, padding=True, return_tensors="pt")["input_ids"])
    with torch.no_grad():
        a = original(batch["input_ids"], batch["attention_mask"]).tokens
        b = loaded(batch["input_ids"], batch["attention_mask"]).tokens
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no config.json"):
        mmfuse.build_component("encoder", {"name": "hf-text", "path": str(tmp_path / "empty")})


def test_hf_text_freeze_stops_gradients_and_dropout():
    enc = text_encoder(freeze=True, config={**TINY_BERT, "hidden_dropout_prob": 0.5})
    enc.train()
    assert not enc.model.training and not any(p.requires_grad for p in enc.parameters())
    batch = enc.tokenizer(["lovely circle"], return_tensors="pt")
    a = enc(batch["input_ids"], batch["attention_mask"]).tokens
    b = enc(batch["input_ids"], batch["attention_mask"]).tokens
    assert torch.equal(a, b) and not a.requires_grad


# -- timm-vit -----------------------------------------------------------------------------------
def test_vit_patch_tokens_with_and_without_class_token():
    torch.manual_seed(0)
    enc = vit_encoder()
    assert enc.image_size == (32, 32) and enc.grid_size == (4, 4) and enc.num_prefix_tokens == 0
    assert enc.data_config["input_size"] == (3, 32, 32)  # timm keeps 224 unless told
    pixels = torch.randn(2, 3, 32, 32)
    features = enc(pixels)
    assert features.tokens.shape == (2, 16, 32) and features.mask.all() and features.pooled.shape == (2, 32)
    torch.manual_seed(0)
    with_cls = vit_encoder(include_class_token=True)
    cls_features = with_cls(pixels)
    assert with_cls.num_prefix_tokens == 1 and cls_features.tokens.shape == (2, 17, 32)
    assert torch.equal(cls_features.tokens[:, 0], cls_features.pooled)
    torch.testing.assert_close(cls_features.tokens[:, 1:], features.tokens)
    with pytest.raises(ConfigError, match="vit_bse_patch16_224' is not a timm model. Close matches: vit_base_patch16_224"):
        vit_encoder(model_name="vit_bse_patch16_224")
    with pytest.raises(ConfigError, match="train_transform.scal: not an augmentation option"):
        vit_encoder(train_transform={"scal": [0.5, 1.0]})


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.usefixtures("no_network")
def test_vit_from_local_checkpoint_file(tmp_path, suffix):
    import timm

    torch.manual_seed(1)
    # a checkpoint *with* a classification head, as published ImageNet weights have
    source = timm.create_model(TINY_VIT["model_name"], num_classes=10,
                               **{k: v for k, v in TINY_VIT.items() if k != "model_name"})
    path = tmp_path / f"vit{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    enc = vit_encoder(checkpoint_path=str(path)).eval()
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = source.eval().forward_features(pixels)[:, 1:]
        torch.testing.assert_close(enc(pixels).tokens, expected)
    with pytest.raises(ConfigError, match=r"checkpoint_path: .* does not fit 'vit_tiny_patch16_224'"):
        vit_encoder(checkpoint_path=str(path), embed_dim=64)
    with pytest.raises(ConfigError, match="is not a file"):
        vit_encoder(checkpoint_path=str(tmp_path / "missing.pth"))


# -- processor ----------------------------------------------------------------------------------
def test_processor_builds_batches_and_checks_inputs():
    enc, vit = text_encoder(), vit_encoder(crop_pct=1.0, train_transform={"scale": [0.5, 1.0], "hflip": 1.0})
    processor = MultimodalProcessor(enc.tokenizer, build_image_transform(vit.data_config), max_length=16)
    images = [shape_image((220, 40, 40)), shape_image((30, 160, 60), size=(300, 200))]
    batch = processor(["lovely circle", "look at this lovely triangle today"], images)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "pixel_values"}
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == (2, 8)
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    # normalised with the ViT's mean / std (0.5, 0.5): the pale background maps close to +0.84
    assert batch["pixel_values"][0, :, 0, 0].tolist() == pytest.approx([0.843, 0.843, 0.765], abs=0.02)
    train = build_image_transform(vit.data_config, train=True, train_options=vit.train_transform)
    flipped = train(shape_image((220, 40, 40), shape="square", size=(32, 32)))
    assert flipped.shape == (3, 32, 32)
    assert set(processor(texts=["circle"])) == {"input_ids", "attention_mask", "token_type_ids"}
    with pytest.raises(ValueError, match="2 texts but 1 images"):
        processor(["a", "b"], images[:1])
    with pytest.raises(TypeError, match=r"texts: expected a list of str, got str"):
        processor("a single string", images[:1])
    with pytest.raises(TypeError, match=r"images\[0\]: expected PIL.Image.Image, got Tensor"):
        processor(["a"], [torch.zeros(3, 32, 32)])
