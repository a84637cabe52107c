"""JML components: region encoder, relation gates, span heads and losses, presets, batch errors."""

from __future__ import annotations

import math

import pytest
import torch
from jml_support import TWEETS, make_span_batch
from radm_support import one_thread  # noqa: F401  (fixture)

import mmfuse
from mmfuse.core.build import build_component
from mmfuse.core.config import ConfigError
from mmfuse.heads.relation import gate_regions, relation_gate
from mmfuse.heads.span import MASKED_LOGIT, polarity_loss, span_attention_pool, span_boundary_loss
from mmfuse.core.batch import BatchError
from mmfuse.models.jml.outputs import JMLOutput

TINY_REGIONS = {"name": "timm-regions", "model_name": "resnet18", "img_size": 64, "grid_size": 4,
                "layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_width": 16, "output_stride": 16}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models() -> dict:
    torch.manual_seed(0)
    return {name: mmfuse.build_model(name).eval() for name in ("jml-tiny", "jml-tiny-hard", "jml-tiny-text")}


def _batch(model, tweets=TWEETS, labels=True):
    return make_span_batch(model.tokenizer, tweets, image_size=64 if model.has_image else None, labels=labels)


def _force_relation(model, adds: bool) -> None:
    """Make the relation module say "adds" (p_r ≈ 1) or "does not add" (p_r ≈ 0) for every input."""
    w2 = model.relation.head.w2
    with torch.no_grad():
        w2.weight.zero_()
        w2.bias.copy_(torch.tensor([-6.0, 6.0] if adds else [6.0, -6.0]))


# -- region encoder ----------------------------------------------------------------------------------
def test_stride_32_resnet_gives_49_regions_from_224():
    import inspect

    from mmfuse.encoders.regions import TimmRegionEncoder

    defaults = {k: p.default for k, p in inspect.signature(TimmRegionEncoder).parameters.items()}
    assert (defaults["model_name"], defaults["img_size"], defaults["grid_size"]) == ("resnet50", 224, 7)
    small = {k: v for k, v in TINY_REGIONS.items() if k not in ("img_size", "grid_size", "output_stride")}
    encoder = build_component("encoder", small).eval()  # ResNet-50's stride 32, small channels
    assert encoder.grid_size == (7, 7) and encoder.image_size == (224, 224) and encoder.out_dim == 128
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        features = encoder(x)
        feature_map = encoder.model.forward_features(x)
    assert features.tokens.shape == (1, 49, 128) and features.mask.all()
    # regions are the ResNet map in row-major order (no pooling at 7×7)
    torch.testing.assert_close(features.tokens[0, 8], feature_map[0, :, 1, 1])
    torch.testing.assert_close(features.pooled, features.tokens.mean(1))


def test_region_grid_pools_larger_maps_and_checks_sizes(tmp_path):
    encoder = build_component("encoder", {**TINY_REGIONS, "grid_size": 2}).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feature_map = encoder.model.forward_features(x)  # [2, 128, 4, 4]
        tokens = encoder(x).tokens
    expected = feature_map.reshape(2, 128, 2, 2, 2, 2).mean(dim=(3, 5)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(tokens, expected)
    with pytest.raises(ConfigError, match="grid_size: 5 is larger than the 4×4 feature map"):
        build_component("encoder", {**TINY_REGIONS, "grid_size": 5})
    with pytest.raises(ConfigError, match="checkpoint_path.*is not a file"):
        build_component("encoder", {**TINY_REGIONS, "checkpoint_path": str(tmp_path / "missing.pth")})
    with pytest.raises(ConfigError, match="model_name: 'resnet5O' is not a timm model"):
        build_component("encoder", {"name": "timm-regions", "model_name": "resnet5O"})
    with pytest.raises(ValueError, match=r"pixel_values must be \[B, 3, 64, 64\]"):
        encoder(torch.randn(1, 3, 32, 32))


def test_region_encoder_loads_a_local_checkpoint_without_its_classifier(tmp_path):
    import timm

    source = timm.create_model("resnet18", pretrained=False, layers=(1, 1, 1, 1), channels=(16, 32, 64, 128),
                               stem_width=16, num_classes=10)
    torch.save(source.state_dict(), tmp_path / "weights.pth")  # with an fc head the encoder drops
    encoder = build_component("encoder", {**TINY_REGIONS, "checkpoint_path": str(tmp_path / "weights.pth")})
    torch.testing.assert_close(encoder.model.conv1.weight, source.conv1.weight)


# -- relation gate -----------------------------------------------------------------------------------
def test_hard_gate_is_binary_with_straight_through_gradient():
    p = torch.tensor([0.1, 0.49, 0.5, 0.93], requires_grad=True)
    gate = relation_gate(p, "hard")
    assert gate.tolist() == [0.0, 0.0, 1.0, 1.0]
    gate.sum().backward()
    assert p.grad.tolist() == [1.0, 1.0, 1.0, 1.0]
    soft = relation_gate(p, "soft")
    assert soft is p
    regions = torch.randn(4, 3, 5)
    gated = gate_regions(regions, gate.detach())
    assert gated[:2].abs().sum() == 0 and torch.equal(gated[2:], regions[2:])
    with pytest.raises(ValueError, match="gate: expected 'soft' or 'hard'"):
        relation_gate(p, "sometimes")


@pytest.mark.parametrize("name", ["jml-tiny", "jml-tiny-hard"])
def test_gates_scale_the_regions_as_named(models, name):
    model = models[name]
    batch = _batch(model)
    with torch.no_grad():
        ungated = model.encode_image(batch).tokens
        output = model(batch)
    p = output.relation_prob
    assert p.shape == (len(TWEETS),) and bool(((p > 0) & (p < 1)).all())
    expected_gate = p if name == "jml-tiny" else (p >= 0.5).float()
    torch.testing.assert_close(output.relation_gate, expected_gate)
    torch.testing.assert_close(output.regions, ungated * expected_gate[:, None, None])
    if name == "jml-tiny-hard":
        for adds in (False, True):
            saved = {k: v.clone() for k, v in model.relation.head.w2.state_dict().items()}
            _force_relation(model, adds)
            with torch.no_grad():
                out = model(batch)
            model.relation.head.w2.load_state_dict(saved)
            assert set(out.relation_gate.tolist()) == {1.0 if adds else 0.0}
            if adds:
                torch.testing.assert_close(out.regions, ungated)
            else:
                assert out.regions.abs().max() == 0


def test_soft_gate_changes_the_predictions_with_the_relation(models):
    """The gate reaches the heads: an image that 'adds' moves the logits, one that does not is ignored."""
    model = models["jml-tiny"]
    batch = _batch(model)
    other = dict(batch, pixel_values=torch.randn_like(batch["pixel_values"]))
    saved = {k: v.clone() for k, v in model.relation.head.w2.state_dict().items()}
    try:
        logits = {}
        for adds in (False, True):
            _force_relation(model, adds)
            with torch.no_grad():
                logits[adds] = (model(batch).start_logits, model(other).start_logits)
    finally:
        model.relation.head.w2.load_state_dict(saved)
    # with p_r ≈ 0 the image barely matters; with p_r ≈ 1 it does
    small = (logits[False][0] - logits[False][1]).abs().max()
    large = (logits[True][0] - logits[True][1]).abs().max()
    assert small < 1e-2 * large and large > 1e-4


# -- shapes and structure of the presets -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["jml-tiny", "jml-tiny-hard", "jml-tiny-text"])
def test_preset_shapes_and_named_losses(models, name):
    model = models[name]
    batch = _batch(model)
    output = model(batch)
    b, w = batch["word_mask"].shape
    assert isinstance(output, JMLOutput)
    assert output.start_logits.shape == output.end_logits.shape == (b, w)
    assert output.polarity_logits.shape == (b, batch["spans"].shape[1], 3)
    assert output.word_states.shape == (b, w, model.d_model)
    assert (output.start_logits[~batch["word_mask"]] == MASKED_LOGIT).all()
    assert set(output.losses) == {"start", "end", "polarity"}
    assert torch.isclose(output.loss, sum(output.losses.values()))
    if model.has_image:
        assert output.regions.shape == (b, 16, model.d_model) and output.relation_prob.shape == (b,)
    else:
        assert output.regions is None and output.relation_prob is None and output.relation_gate is None


def test_text_variant_has_no_image_modules(models):
    model = models["jml-tiny-text"]
    names = [name for name, _ in model.named_parameters()]
    assert not [n for n in names if "image" in n or "relation" in n or "cross_attention" in n]
    assert model.relation is None and model.encoders.image_encoder is None
    assert model.extraction_head.cross_attention is None and model.sentiment_head.cross_attention is None
    with pytest.raises(TypeError, match="text-only"):
        model.encode_image(_batch(model))
    # its parameters are exactly the text part of jml-tiny's
    full = {n for n, _ in models["jml-tiny"].named_parameters()}
    assert set(names) < full


def test_jml_composed_by_hand_equals_the_built_preset():
    from mmfuse.heads.relation import RelationHead
    from mmfuse.heads.span import AspectExtractionHead, AspectSentimentHead
    from mmfuse.models.jml.model import JML
    from mmfuse.models.jml.relation import JMLRelation

    config = mmfuse.resolve_model_config("jml-tiny")
    torch.manual_seed(0)
    built = mmfuse.build_model("jml-tiny").eval()

    def spec(section):
        return {k: v for k, v in section.items() if k != "name"}

    rel = config["relation"]
    torch.manual_seed(0)  # the registered factory's order: encoders, relation module, heads
    text = build_component("encoder", config["text_encoder"])
    image = build_component("encoder", config["image_encoder"])
    rel_text = build_component("encoder", rel["text_encoder"])
    rel_image = build_component("encoder", rel["image_encoder"])
    relation = JMLRelation(rel_text, rel_image, RelationHead(32, n_heads=2, ffn_dim=64, dropout=0.0), d_model=32,
                           dropout=0.0)
    heads = {"n_heads": 2, "dropout": 0.0}
    model = JML(text, image, relation, AspectExtractionHead(32, cross_modal=True, **heads),
                AspectSentimentHead(32, cross_modal=True, n_classes=3, **heads), gate="soft", d_model=32,
                dropout=0.0).eval()
    assert model.relation is relation and model.encoders.text_encoder is text
    built_state, hand_state = built.state_dict(), model.state_dict()
    assert list(built_state) == list(hand_state)
    for key, value in built_state.items():
        torch.testing.assert_close(hand_state[key], value, rtol=0, atol=0, msg=key)
    batch = _batch(model)
    torch.testing.assert_close(model(batch).start_logits, built(batch).start_logits)
    with pytest.raises(ConfigError, match="extraction_head: cross_modal=False, but the model has image branch"):
        JML(text, image, relation, AspectExtractionHead(32, cross_modal=False), AspectSentimentHead(32, cross_modal=True),
            d_model=32)
    with pytest.raises(TypeError, match="relation: expected a JMLRelation"):
        JML(text, image, torch.nn.Linear(2, 2), AspectExtractionHead(32, cross_modal=True),
            AspectSentimentHead(32, cross_modal=True), d_model=32)


def test_relation_labels_add_the_relation_loss():
    torch.manual_seed(0)
    model = mmfuse.build_model("jml-tiny")
    batch = _batch(model)
    batch["relation_labels"] = torch.tensor([1, 0, 1, -100, 0, 1])
    output = model(batch)
    assert set(output.losses) == {"start", "end", "polarity", "relation"}
    output.loss.backward()
    assert model.relation.head.w2.weight.grad.abs().sum() > 0
    text = mmfuse.build_model("jml-tiny-text")
    with pytest.raises(BatchError, match="relation_labels: this model has no relation module"):
        text(dict(_batch(text), relation_labels=torch.tensor([1] * len(TWEETS))))


def test_aux_losses_attach_through_the_fusion_protocol():
    torch.manual_seed(0)
    model = mmfuse.build_model("jml-tiny", aux_losses=[{"name": "itc", "weight": 0.1}, "itm"]).train()
    output = model(_batch(model))
    assert {"itc", "itm", "start", "end", "polarity"} <= set(output.losses)
    assert model.fuse(model.encode_text(_batch(model)), model.encode_image(_batch(model))).shape == (len(TWEETS), 32)


# -- span heads and losses vs references -------------------------------------------------------------------
def test_span_attention_pool_matches_a_loop():
    torch.manual_seed(1)
    states, scores = torch.randn(2, 6, 4), torch.randn(2, 6)
    spans = torch.tensor([[[0, 2], [4, 4]], [[1, 5], [0, 0]]])
    span_mask = torch.tensor([[True, True], [True, False]])
    pooled = span_attention_pool(states, scores, spans, span_mask)
    for b in range(2):
        for s in range(2):
            if not span_mask[b, s]:
                assert pooled[b, s].abs().sum() == 0
                continue
            lo, hi = spans[b, s].tolist()
            alpha = torch.softmax(scores[b, lo:hi + 1], dim=0)
            torch.testing.assert_close(pooled[b, s], (alpha[:, None] * states[b, lo:hi + 1]).sum(0))


def test_boundary_and_polarity_losses_by_hand():
    logits = torch.tensor([[1.0, 2.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    z = math.log(math.exp(1) + math.exp(2) + math.exp(0))
    first = -((1 - z) + (2 - z)) / 2
    second = -(0 - math.log(2))
    assert span_boundary_loss(logits, labels, mask).item() == pytest.approx((first + second) / 2, rel=1e-6)
    no_gold = span_boundary_loss(logits, torch.zeros_like(labels), mask)
    assert no_gold.item() == 0.0
    pol = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    expected = -(2 - math.log(math.exp(2) + 2))
    assert polarity_loss(pol, torch.tensor([[0, -100]])).item() == pytest.approx(expected, rel=1e-6)


# -- bad configs and batches -------------------------------------------------------------------------------
def test_bad_configs_fail_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="gate: a text-only JML"):
        mmfuse.build_model("jml-tiny-text", gate="soft")
    with pytest.raises(ConfigError, match="relation: gate 'none' uses no relation module"):
        mmfuse.build_model("jml-tiny-norel", relation={"text_encoder": "x"})
    with pytest.raises(ConfigError, match="needs exactly one of `relation`"):
        mmfuse.build_model("jml-tiny", relation=None)
    with pytest.raises(ConfigError, match="loss_weights: unknown losses"):
        mmfuse.build_model("jml-tiny-text", loss_weights={"sentiment": 1.0})
    with pytest.raises(ConfigError, match="relation_checkpoint: .* is not a folder"):
        mmfuse.build_model("jml-tiny", relation=None, relation_checkpoint=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="same tokenizer"):
        mmfuse.build_model("jml-tiny", **{"relation.text_encoder.words": ["zzzyyy"]})


def test_bad_batches_fail_naming_the_key(models):
    model = models["jml-tiny"]
    good = _batch(model)

    def fails(message, error=BatchError, **changes):
        batch = dict(good, **changes)
        for key, value in changes.items():
            if value is None:
                batch.pop(key)
        with pytest.raises(error, match=message):
            model(batch)

    fails("missing 'word_starts'", word_starts=None)
    fails("word_mask: expected a bool tensor", TypeError, word_mask=good["word_mask"].long())
    fails(r"word_starts: indices of real words must be in \[0, ", word_starts=good["word_starts"] + 100)
    bad_spans = good["spans"].clone()
    bad_spans[0, 0] = torch.tensor([3, 1])
    fails(r"spans: real span \[3, 1\] is not 0 <= start <= end", spans=bad_spans)
    bad_spans[0, 0] = torch.tensor([3, 40])
    fails("spans: real span", spans=bad_spans)
    polarity = good["span_polarity"].clone()
    polarity[0, 0] = 3
    fails(r"span_polarity: real spans need a class index in \[0, 2\], got 3", span_polarity=polarity)
    fails("training labels must come together", end_labels=None)
    fails(r"start_labels: expected shape \[B, W\]", start_labels=good["start_labels"][:, :3])
    fails("pixel_values: expected 64×64 images", pixel_values=torch.randn(len(TWEETS), 3, 32, 32))
    fails("missing 'pixel_values'", pixel_values=None)
    fails("mismatched batch sizes", pixel_values=good["pixel_values"][:2])
    with pytest.raises(TypeError, match="predict: unknown decoding options"):
        model.predict(good, beam=3)


def test_full_size_presets_describe_the_paper_setting():
    from mmfuse.models.builder import resolve_model_config

    jml = resolve_model_config("jml-base")
    assert jml["d_model"] == 768 and jml["n_heads"] == 8 and jml["gate"] == "soft"
    assert jml["text_encoder"]["config"]["hidden_size"] == 768
    assert (jml["image_encoder"]["model_name"], jml["image_encoder"]["grid_size"]) == ("resnet50", 7)
    assert jml["relation"]["image_encoder"]["model_name"] == "resnet50"
    assert resolve_model_config("jml-base-hard")["gate"] == "hard"
    text = resolve_model_config("jml-base-text")
    assert text["image_encoder"] is None and text["relation"] is None and text["gate"] == "none"
    assert resolve_model_config("jml-relation-base")["model"] == "jml-relation"
    assert {"jml-tiny", "jml-tiny-hard", "jml-tiny-text", "jml-tiny-norel", "jml-relation-tiny"} <= set(
        mmfuse.list_components("preset"))
