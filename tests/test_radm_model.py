"""The RADM model end to end: presets, padding, score threading, ablations, op paths, learning,
batch errors, multi-task heads, the fusion protocol with ITC / ITM, and the heatmap command.

Everything runs on ``radm-tiny`` with 32×32 images (8×8 patches: a 4×4 grid); the big presets
are built on the meta device (structure and parameter counts only, no memory, no compute).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import subprocess_env
from PIL import Image
from radm_support import COLOURS, fused_cpu_op, make_batch, one_thread, shape_image  # noqa: F401 (fixtures)

import mmfuse
from mmfuse.cli import main
from mmfuse.fusion.residual_attention import ResidualAttention
from mmfuse.heads.classification import IGNORE_INDEX
from mmfuse.losses.auxiliary import AuxiliaryLosses
from mmfuse.core.batch import BatchError
from mmfuse.core.features import SupportsFusion
from mmfuse.models.radm.model import RADM
from mmfuse.ops import fused_kernel_available
from mmfuse.viz import text_image_alignment

pytestmark = pytest.mark.usefixtures("one_thread")

#: radm-tiny at 32×32 (a 4×4 patch grid): the same model, a sixteenth of the image tokens
SMALL = {"image_encoder.img_size": 32}
TINY_PRESETS = ["radm-tiny", "radm-tiny-rm_rg", "radm-tiny-realformer", "radm-tiny-rm_c"]
BIG_PRESETS = ["radm-base", "radm-base-rm_rg", "radm-base-realformer", "radm-base-rm_c"]
MSED_TASKS = {"sentiment": 3, "emotion": 6, "desire": 7}


def tiny(preset: str = "radm-tiny", seed: int = 0, **overrides) -> RADM:
    torch.manual_seed(seed)
    return mmfuse.build_model(preset, **{**SMALL, **overrides})


def modes(model: torch.nn.Module, block: str) -> list[str]:
    return [m.mode for m in getattr(model, block).modules() if isinstance(m, ResidualAttention)]


def n_params(module: torch.nn.Module, match: str = "") -> int:
    return sum(p.numel() for name, p in module.named_parameters() if match in name)


# ---------------------------------------------------------------------------------------------
# composition: RADM takes modules; build_model only builds them from a config
# ---------------------------------------------------------------------------------------------
class ConcatFusion(torch.nn.Module):
    """A hand-written fusion block (not registered): each side attends to nothing, it only mixes in
    the other side's masked mean, so the test can tell the model really uses the module it gets."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.mix = torch.nn.Linear(2 * d_model, d_model)

    def forward(self, text, text_mask, image, image_mask, return_attentions=False):
        from mmfuse.fusion.pooling import masked_mean
        from mmfuse.fusion.protocol import FusionOutput

        t, i = masked_mean(text, text_mask), masked_mean(image, image_mask)
        text = self.mix(torch.cat([text, i[:, None].expand_as(text)], dim=-1))
        image = self.mix(torch.cat([image, t[:, None].expand_as(image)], dim=-1))
        return FusionOutput(text, image, {"concat": [torch.zeros(text.shape[0], 1, 1, 1)]} if return_attentions else None)


def test_radm_from_hand_made_modules_equals_the_built_preset():
    from mmfuse.encoders.text import HFTextEncoder
    from mmfuse.encoders.vit import TimmViTEncoder
    from mmfuse.fusion.interaction import RADMInteraction
    from mmfuse.fusion.self_fusion import SelfFusionEncoder
    from mmfuse.heads.classification import ClassificationHeads

    config = mmfuse.resolve_model_config("radm-tiny", **SMALL)
    built = tiny()  # seed 0, same config

    def spec(key):  # the preset's options of one part, without the registry name
        return {k: v for k, v in config[key].items() if k != "name"}

    torch.manual_seed(0)  # same construction order as the registered factory: encoders, blocks, heads
    text = HFTextEncoder(**spec("text_encoder"))
    image = TimmViTEncoder(**spec("image_encoder"))
    fusion = RADMInteraction(d_model=64, **spec("fusion"))
    self_fusion = SelfFusionEncoder(d_model=64, **spec("self_fusion"))
    heads = ClassificationHeads(d_in=128, **spec("heads"))
    by_hand = RADM(text, image, fusion, self_fusion, heads, d_model=64, dropout=config["dropout"])
    assert by_hand.fusion is fusion and by_hand.text_encoder is text and by_hand.heads is heads

    built_state, hand_state = built.state_dict(), by_hand.state_dict()
    assert list(built_state) == list(hand_state)
    for key, value in built_state.items():
        torch.testing.assert_close(hand_state[key], value, rtol=0, atol=0, msg=key)
    batch = make_batch(built, n=3)
    torch.testing.assert_close(by_hand.eval()(batch).logits["sentiment"], built.eval()(batch).logits["sentiment"])


def test_radm_uses_any_fusion_module_it_is_given():
    parts = tiny()
    model = RADM(parts.text_encoder, parts.image_encoder, ConcatFusion(64), None, parts.heads, d_model=64).eval()
    batch = make_batch(model, n=2)
    out = model(batch, return_attentions=True)
    assert set(out.attentions) == {"concat"} and out.logits["sentiment"].shape == (2, 3)
    out.loss.backward()
    assert model.fusion.mix.weight.grad.abs().sum() > 0  # the hand-made block is trained
    with pytest.raises(TypeError, match="fusion: expected an nn.Module"):
        RADM(parts.text_encoder, parts.image_encoder, "radm-interaction", None, parts.heads, d_model=64)
    with pytest.raises(mmfuse.ConfigError, match="heads: Linear lacks tasks, losses, check_labels"):
        RADM(parts.text_encoder, parts.image_encoder, ConcatFusion(64), None, torch.nn.Linear(128, 3), d_model=64)


# ---------------------------------------------------------------------------------------------
# presets and output shapes
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", TINY_PRESETS)
def test_tiny_presets_output_shapes(preset):
    model = tiny(preset).eval()
    batch = make_batch(model, n=3)
    lt = batch["input_ids"].shape[1]
    out = model(batch, return_attentions=True)
    assert out.logits["sentiment"].shape == (3, 3)
    assert out.fused.shape == (3, 128) and out.text_pooled.shape == out.image_pooled.shape == (3, 64)
    assert out.text_features.tokens.shape == (3, lt, 64) and out.image_features.tokens.shape == (3, 16, 64)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss) and set(out.losses) == {"sentiment"}
    shapes = {stream: [tuple(s.shape) for s in maps] for stream, maps in out.attentions.items()}
    expected = {"tt": [(3, 4, lt, lt)] * 2, "ii": [(3, 4, 16, 16)] * 2, "joint": [(3, 4, lt + 16, lt + 16)]}
    if not preset.endswith("rm_c"):
        expected.update({"ti": [(3, 4, lt, 16)] * 2, "it": [(3, 4, 16, lt)] * 2})
    assert shapes == expected
    assert model(batch).attentions is None


def _fusion_parameters(d: int, heads: int, layers: int, self_layers: int, mode: str, cross: bool) -> int:
    """Parameter count of RADM's fusion part, from the architecture's description."""
    attention = 4 * (d * d + d)  # q, k, v, out projections
    gates = 2 * heads if mode == "gated" else 0  # per-head gate weight and bias, layers 2..n
    ffn = 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)  # LayerNorm + W1 + W2
    norm = 2 * d
    sublayers = 2 + (2 if cross else 0)  # self-attentions (+ cross-attentions)
    interaction = layers * (sublayers * (attention + norm) + (2 if cross else 0) * norm + 2 * ffn)
    interaction += (layers - 1) * sublayers * gates + 2 * norm  # + final text / image LayerNorms
    self_fusion = 2 * d + self_layers * (norm + attention + ffn) + (self_layers - 1) * gates + norm
    return interaction + self_fusion


@pytest.mark.parametrize("preset", BIG_PRESETS)
def test_big_presets_on_meta_device_have_the_paper_sizes(preset):
    with torch.device("meta"):
        model = mmfuse.build_model(preset)
    assert all(p.is_meta for p in model.parameters())
    # published sizes: bert-base-uncased 109,482,240 parameters with its pooler (768·768 + 768);
    # ViT-B/16 86,567,656 with its 1000-class head (768·1000 + 1000)
    assert n_params(model.text_encoder) == 109_482_240 - 590_592
    assert n_params(model.image_encoder) == 86_567_656 - 769_000
    assert model.image_encoder.image_size == (224, 224) and model.image_encoder.grid_size == (14, 14)
    assert model.d_model == 768 and model.feature_dims.fused == 1536
    mode = {"radm-base-rm_rg": "none", "radm-base-realformer": "residual"}.get(preset, "gated")
    cross = preset != "radm-base-rm_c"
    fusion = n_params(model.fusion) + n_params(model.self_fusion)
    assert fusion == _fusion_parameters(768, 12, 6, 2, mode, cross)
    assert n_params(model.encoders.text_proj) == n_params(model.encoders.image_proj) == 768 * 768 + 768
    assert n_params(model.heads) == (1536 * 768 + 768) + (768 * 3 + 3)


# ---------------------------------------------------------------------------------------------
# ablations
# ---------------------------------------------------------------------------------------------
def test_ablations_remove_what_they_name():
    full, rm_rg, realformer, rm_c = (tiny(p) for p in TINY_PRESETS)
    # the full model: gated attention everywhere but in each stack's first layer
    assert modes(full, "fusion") == ["none"] * 4 + ["gated"] * 4 and modes(full, "self_fusion") == ["none"]
    gates = n_params(full, "gate_")
    assert gates == 4 * 2 * 4  # layer 2 of the interaction stack: 4 attentions × (weight, bias) × 4 heads
    # rm_rg: no gate anywhere, plain attention, and nothing else removed
    assert set(modes(rm_rg, "fusion") + modes(rm_rg, "self_fusion")) == {"none"}
    assert n_params(rm_rg, "gate_") == 0 and n_params(full) - n_params(rm_rg) == gates
    # realformer: residual attention without gates
    assert modes(realformer, "fusion") == ["none"] * 4 + ["residual"] * 4 and n_params(realformer, "gate_") == 0
    # rm_c: the cross-attention sub-layers are gone, and only they
    assert not any("cross" in name for name, _ in rm_c.named_modules())
    assert modes(rm_c, "fusion") == ["none"] * 2 + ["gated"] * 2
    assert n_params(full) - n_params(rm_c) == n_params(full, "cross") > 0


def test_rm_rg_ignores_previous_scores_and_rm_c_text_ignores_the_image_before_self_fusion():
    """Behaviour, not just structure: with no gate the previous scores play no part; without
    cross-modal attention the interaction stack's text output does not depend on the image."""
    rm_rg, rm_c = tiny("radm-tiny-rm_rg").eval(), tiny("radm-tiny-rm_c").eval()
    batch = make_batch(rm_c, n=2, labels=False)
    other = {**batch, "pixel_values": torch.randn_like(batch["pixel_values"])}
    seen = []
    rm_c.fusion.register_forward_hook(lambda module, args, out: seen.append(out.text))
    rm_c(batch), rm_c(other)
    torch.testing.assert_close(seen[0], seen[1], rtol=0, atol=0)

    layer = rm_rg.fusion.layers[1]
    text, mask = torch.randn(2, 5, 64), torch.ones(2, 5, dtype=torch.bool)
    image, image_mask = torch.randn(2, 16, 64), torch.ones(2, 16, dtype=torch.bool)
    junk = {"tt": torch.randn(2, 4, 5, 5), "ii": torch.randn(2, 4, 16, 16), "ti": torch.randn(2, 4, 5, 16),
            "it": torch.randn(2, 4, 16, 5)}
    with_prev, without = layer(text, mask, image, image_mask, junk), layer(text, mask, image, image_mask, None)
    torch.testing.assert_close(with_prev[0], without[0], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# padding, score threading, op paths
# ---------------------------------------------------------------------------------------------
def test_padding_tokens_do_not_change_the_result_for_real_tokens():
    model = tiny().eval()
    batch = make_batch(model, n=3)
    ref = model(batch)
    padded = dict(batch)
    extra = 4
    padded["input_ids"] = torch.cat([batch["input_ids"], torch.full((3, extra), 17)], dim=1)  # garbage ids
    for key in ("attention_mask", "token_type_ids"):
        padded[key] = torch.cat([batch[key], torch.zeros(3, extra, dtype=torch.long)], dim=1)
    out = model(padded)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out.logits["sentiment"], ref.logits["sentiment"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.fused, ref.fused, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.text_features.tokens[:, :real.shape[1]][real], ref.text_features.tokens[real],
                               rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out.text_features.tokens[:, -extra:], torch.zeros(())), "padding was not added"


def test_placeholder_images_do_not_influence_text_only_samples():
    model = tiny().eval()
    batch = make_batch(model, n=2, labels=False)
    batch["image_mask"] = torch.tensor([True, False])
    ref = model(batch)
    pixels = batch["pixel_values"].clone()
    pixels[1] = torch.randn_like(pixels[1])
    out = model({**batch, "pixel_values": pixels})
    torch.testing.assert_close(out.fused[1], ref.fused[1], rtol=1e-5, atol=1e-6)
    assert torch.count_nonzero(out.image_pooled[1]) == 0  # no real image tokens: zero pooled image vector


@pytest.mark.parametrize("impl", ["auto", "fused"])
@pytest.mark.parametrize("preset", ["radm-tiny", "radm-tiny-realformer", "radm-tiny-rm_rg"])
def test_gradients_reach_first_layer_scores_through_the_last_layer(preset, impl, request):
    """The first interaction layer's score streams are replaced by leaves that feed nothing but
    the next layers' ``prev``: a gradient on them has come back through every later layer.
    ``fused`` runs the op's registered autograd formula (see the ``fused_cpu_op`` fixture)."""
    if impl == "fused":
        request.getfixturevalue("fused_cpu_op")
    model = tiny(preset, **{"fusion.n_layers": 3}).eval()  # eval: no dropout noise, gradients still flow
    model.set_attention_impl(impl)
    leaves: dict[str, torch.Tensor] = {}

    def swap_scores(module, args, output):
        text, image, scores = output
        leaves.update({k: v.detach().requires_grad_() for k, v in scores.items()})
        return text, image, dict(leaves)

    model.fusion.layers[0].register_forward_hook(swap_scores)
    out = model(make_batch(model, n=2), return_attentions=True)
    last = out.attentions
    through_scores = torch.autograd.grad(sum(last[s][-1].sum() for s in leaves), list(leaves.values()),
                                         allow_unused=True, retain_graph=True)
    through_loss = torch.autograd.grad(out.loss, list(leaves.values()), allow_unused=True)
    assert set(leaves) == {"tt", "ii", "ti", "it"}
    for stream, g_scores, g_loss in zip(leaves, through_scores, through_loss):
        if preset.endswith("rm_rg"):
            assert g_scores is None and g_loss is None, stream
        else:
            assert g_scores is not None and g_scores.abs().sum() > 0, stream
            assert g_loss is not None and g_loss.abs().sum() > 0, stream


def _output_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(batch, return_attentions=True)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_matches_reference(model, batch, impl: str) -> dict[str, torch.Tensor]:
    """Logits, every score map and every parameter gradient of ``impl`` equal the reference's;
    returns the gradients."""
    model.set_attention_impl("reference")
    ref, ref_grads = _output_and_grads(model, batch)
    model.set_attention_impl(impl)
    out, grads = _output_and_grads(model, batch)
    torch.testing.assert_close(out.logits["sentiment"], ref.logits["sentiment"], rtol=1e-4, atol=1e-5)
    for stream in ref.attentions:
        for got, expected in zip(out.attentions[stream], ref.attentions[stream]):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert grads.keys() == ref_grads.keys() and len(grads) == len(list(model.parameters()))
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-3, atol=1e-5, msg=name)
    return grads


def test_fused_and_reference_paths_give_the_same_model_output():
    """``auto`` uses the compiled kernel when one exists for CPU / float32 (else it *is* the
    reference, and this compares the dispatch path with the direct one)."""
    model = tiny().eval()
    assert model.set_attention_impl("auto") == 2 * 4 + 1
    assert_matches_reference(model, make_batch(model, n=3), "auto")


@pytest.mark.parametrize("preset", ["radm-tiny", "radm-tiny-realformer"])
@pytest.mark.usefixtures("fused_cpu_op")
def test_fused_op_path_matches_the_reference_path(preset):
    """``impl="fused"`` (torch.ops.mmfuse + the registered autograd) vs the eager reference:
    same outputs, score maps and parameter gradients, including the gate parameters'."""
    model = tiny(preset).eval()
    grads = assert_matches_reference(model, make_batch(model, n=3), "fused")
    assert any("gate_" in name for name in grads) == (preset == "radm-tiny")


def test_fused_impl_runs_the_kernel_or_says_why_not():
    model = tiny().eval()
    batch = make_batch(model, n=2)
    model.set_attention_impl("fused")
    if fused_kernel_available("cpu", torch.float32):
        fused = model(batch).logits["sentiment"]
        model.set_attention_impl("reference")
        torch.testing.assert_close(fused, model(batch).logits["sentiment"], rtol=1e-4, atol=1e-5)
    else:
        with pytest.raises(RuntimeError, match="impl='fused': no compiled mmfuse kernel for device 'cpu'"):
            model(batch)


# ---------------------------------------------------------------------------------------------
# learning
# ---------------------------------------------------------------------------------------------
def test_radm_tiny_overfits_a_fixed_small_batch():
    model = tiny()
    texts = ["look at this lovely triangle", "awful circle", "here is this plain square", "i saw this great circle",
             "a red square", "blue circle here"]
    images = [shape_image(COLOURS[i % 4], shape="circle" if i < 4 else "square") for i in range(6)]
    batch = model.get_processor()(texts, images)
    batch["labels"] = {"sentiment": torch.tensor([0, 1, 2, 0, 1, 2])}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(30):
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 0.9  # ≈ ln 3 at the start
    assert max(losses[-3:]) < losses[0] / 10, losses
    with torch.no_grad():
        predictions = model.eval()(batch).logits["sentiment"].argmax(-1)
    assert predictions.tolist() == batch["labels"]["sentiment"].tolist()


# ---------------------------------------------------------------------------------------------
# bad batches
# ---------------------------------------------------------------------------------------------
def test_bad_batches_raise_clear_errors():
    model = tiny().eval()
    batch = make_batch(model, n=3)
    without = {k: v for k, v in batch.items() if k != "pixel_values"}
    with pytest.raises(BatchError, match=r"batch is missing 'pixel_values' \(float \[B, 3, 32, 32\]\); keys present: "
                                         r"attention_mask, input_ids, labels, token_type_ids; build batches with "
                                         r"model.get_processor\(\)"):
        model(without)
    with pytest.raises(BatchError, match="batch is missing 'input_ids'"):
        model({k: v for k, v in batch.items() if k != "input_ids"})
    with pytest.raises(BatchError, match=r"pixel_values: expected 32×32 images \(the image encoder's input size\), "
                                         r"got 48×48; resize them with model.get_processor\(\)"):
        model({**batch, "pixel_values": torch.randn(3, 3, 48, 48)})
    with pytest.raises(BatchError, match=r"pixel_values: expected shape \[B, 3, H, W\], got \(3, 32, 32\)"):
        model({**batch, "pixel_values": torch.randn(3, 32, 32)})
    with pytest.raises(BatchError, match=r"batch: mismatched batch sizes \(input_ids: 3, pixel_values: 2, "
                                         r"labels\['sentiment'\]: 3\)"):
        model({**batch, "pixel_values": batch["pixel_values"][:2]})
    with pytest.raises(BatchError, match=r"mismatched batch sizes \(input_ids: 3, pixel_values: 3, "
                                         r"labels\['sentiment'\]: 4\)"):
        model({**batch, "labels": {"sentiment": torch.zeros(4, dtype=torch.long)}})
    with pytest.raises(BatchError, match=r"attention_mask: expected the shape of input_ids \(3, \d+\), got \(3, 2\)"):
        model({**batch, "attention_mask": batch["attention_mask"][:, :2]})
    with pytest.raises(BatchError, match=r"input_ids: token id 99999 is outside the text encoder's vocabulary"):
        model({**batch, "input_ids": batch["input_ids"].index_fill(1, torch.tensor([1]), 99999)})
    with pytest.raises(TypeError, match="pixel_values: expected a floating-point tensor"):
        model({**batch, "pixel_values": batch["pixel_values"].long()})
    with pytest.raises(ValueError, match=r"labels: the model's tasks are \['sentiment'\]; missing \['sentiment'\]; "
                                         r"unknown \['emotion'\]"):
        model({**batch, "labels": {"emotion": torch.zeros(3, dtype=torch.long)}})
    with pytest.raises(ValueError, match=r"labels\['sentiment'\]: class indices must be in \[0, 2\].* got 3"):
        model({**batch, "labels": {"sentiment": torch.tensor([0, 3, 1])}})
    with pytest.raises(TypeError, match="batch: expected a dict of tensors"):
        model([batch])


# ---------------------------------------------------------------------------------------------
# heads, fusion protocol, auxiliary losses
# ---------------------------------------------------------------------------------------------
def test_msed_multi_task_heads_with_per_task_loss_weights():
    weights = {"sentiment": 1.0, "emotion": 0.5, "desire": 2.0}
    model = tiny(**{"heads.tasks": MSED_TASKS, "task_weights": weights}).eval()
    batch = make_batch(model, n=4)
    batch["labels"]["desire"][1] = IGNORE_INDEX  # a post without a desire label
    out = model(batch)
    assert {t: tuple(x.shape) for t, x in out.logits.items()} == {t: (4, c) for t, c in MSED_TASKS.items()}
    expected = {t: F.cross_entropy(out.logits[t], batch["labels"][t], ignore_index=IGNORE_INDEX) for t in MSED_TASKS}
    for task in MSED_TASKS:
        torch.testing.assert_close(out.losses[task], expected[task])
    torch.testing.assert_close(out.loss, sum(weights[t] * expected[t] for t in MSED_TASKS))
    out.loss.backward()
    assert all(model.heads.classifiers[t][-1].weight.grad.abs().sum() > 0 for t in MSED_TASKS)
    with pytest.raises(mmfuse.ConfigError, match=r"task_weights: unknown tasks \['mood'\]"):
        tiny(task_weights={"mood": 1.0})


def test_radm_implements_the_fusion_protocol():
    model = tiny().eval()
    assert isinstance(model, SupportsFusion)
    batch = make_batch(model, n=3, labels=False)
    out = model(batch)
    text, image = model.encode_text(batch), model.encode_image(batch)
    assert text.tokens.shape[-1] == text.pooled.shape[-1] == model.feature_dims.text == 64
    assert image.mask.shape == (3, 16) and model.feature_dims.image == 64
    torch.testing.assert_close(model.fuse(text, image), out.fused)  # the protocol's promise to ITM
    swapped = model.fuse(text, image.select(torch.tensor([1, 2, 0])))
    assert swapped.shape == (3, model.feature_dims.fused) and not torch.allclose(swapped, out.fused)


def test_itc_and_itm_auxiliary_losses_attach_and_backpropagate():
    aux = [{"name": "itc", "weight": 0.1}, {"name": "itm", "weight": 0.1}]
    model = tiny(aux_losses=aux)
    assert isinstance(model.aux_losses, AuxiliaryLosses) and model.aux_losses.weights == {"itc": 0.1, "itm": 0.1}
    batch = make_batch(model, n=4)
    out = model.train()(batch)
    assert set(out.losses) == {"sentiment", "itc", "itm"}
    assert all(torch.isfinite(v) and v > 0 for v in out.losses.values())
    torch.testing.assert_close(out.loss, out.losses["sentiment"] + 0.1 * (out.losses["itc"] + out.losses["itm"]))
    out.loss.backward()
    for name in ("aux_losses.itm.head.weight", "encoders.text_proj.0.weight", "encoders.image_proj.0.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.aux_losses["itc"].parameters())
    assert set(model.eval()(batch).losses) == {"sentiment"}  # evaluation reports the task loss alone


# ---------------------------------------------------------------------------------------------
# attention heatmaps
# ---------------------------------------------------------------------------------------------
def test_alignment_maps_are_attention_distributions_over_the_patch_grid():
    model = tiny()
    alignment = text_image_alignment(model, "a lovely red triangle", shape_image(COLOURS[0]), layer=0)
    assert alignment.words == ["a", "lovely", "red", "triangle"] and alignment.layer == 0
    assert alignment.maps.shape == (4, 4, 4) and alignment.image.size == (32, 32)
    torch.testing.assert_close(alignment.maps.sum(dim=(1, 2)), torch.ones(4))  # softmax over the 16 patches
    assert bool((alignment.maps >= 0).all())
    with pytest.raises(ValueError, match="layer: expected an index in \\[-2, 1\\], got 2"):
        text_image_alignment(model, "a red triangle", shape_image(COLOURS[0]), layer=2)
    with pytest.raises(ValueError, match="no text→image attention stream 'ti'.*rm_c"):
        text_image_alignment(tiny("radm-tiny-rm_c"), "a red triangle", shape_image(COLOURS[0]))


def test_viz_command_writes_a_png_of_the_expected_size(tmp_path, capsys):
    image = tmp_path / "photo.png"
    shape_image(COLOURS[2]).save(image)
    out = tmp_path / "align.png"
    # 3 words over 2 columns: 2 × 2 panels of 1 inch at 40 dpi → 80 × 80 pixels
    arguments = ["viz", "--model", "radm-tiny", "--set", "image_encoder.img_size=32", "--text", "a lovely blue circle",
                 "--image", str(image), "--columns", "2", "--panel-size", "1", "--dpi", "40"]
    env = {**subprocess_env(), "OMP_NUM_THREADS": "1"}  # one core is plenty for radm-tiny
    proc = subprocess.run([sys.executable, "-m", "mmfuse", *arguments, "--tokens", "lovely", "blue", "circle",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout and "words: lovely blue circle" in proc.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as png:
        png.verify()
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size == (80, 80)
        assert len(png.convert("RGB").getcolors(maxcolors=1 << 16)) > 20  # an image with heatmaps, not a blank canvas
    # errors (in process: the same entry point as `python -m mmfuse`)
    assert main([*arguments, "--tokens", "square", "--out", str(tmp_path / "x.png")]) == 2
    assert "mmfuse viz: error: tokens: 'square' is not a word of the text; its words are ['a', 'lovely', 'blue', " \
           "'circle']" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    assert main([*arguments, "--layer", "5", "--out", str(tmp_path / "x.png")]) == 2
    assert "layer: expected an index in [-2, 1], got 5" in capsys.readouterr().err
