"""ResidualAttention, the RADM interaction stack and the self-fusion encoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from radm_support import one_thread  # noqa: F401 (fixture)

import mmfuse
from mmfuse.fusion import FusionOutput
from mmfuse.fusion.interaction import RADMInteraction
from mmfuse.fusion.residual_attention import ResidualAttention, set_attention_impl
from mmfuse.fusion.self_fusion import SelfFusionEncoder

pytestmark = pytest.mark.usefixtures("one_thread")
D, H = 16, 4


def inputs(batch=2, lt=5, li=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    text, image = torch.randn(batch, lt, D, generator=g), torch.randn(batch, li, D, generator=g)
    text_mask = torch.ones(batch, lt, dtype=torch.bool)
    text_mask[1, 3:] = False
    image_mask = torch.ones(batch, li, dtype=torch.bool)
    image_mask[0, 4:] = False
    return text, text_mask, image, image_mask


def test_plain_residual_attention_matches_sdpa():
    torch.manual_seed(0)
    attn = ResidualAttention(D, H, mode="none").eval()
    x_q, _, x_kv, key_mask = inputs()
    out, scores = attn(x_q, x_kv, key_mask=key_mask)

    def heads(x, proj):
        return proj(x).view(x.shape[0], x.shape[1], H, D // H).transpose(1, 2)

    q, k, v = heads(x_q, attn.q_proj), heads(x_kv, attn.k_proj), heads(x_kv, attn.v_proj)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
    expected = attn.out_proj(expected.transpose(1, 2).reshape(2, 5, D))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scores, q @ k.transpose(-1, -2) / (D // H) ** 0.5)
    assert attn.gate_weight is None and "gate_weight" not in dict(attn.named_parameters())


@pytest.mark.parametrize("bias, expected", [(-40.0, lambda s, p: p / 2), (40.0, lambda s, p: (s + p) / 2)])
def test_gate_parameters_steer_the_combination(bias, expected):
    torch.manual_seed(0)
    gated, plain = ResidualAttention(D, H, mode="gated"), ResidualAttention(D, H, mode="none")
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if not k.startswith("gate_")})
    assert gated.gate_weight.shape == (H,) and gated.gate_bias.shape == (H,)
    x_q, _, x_kv, key_mask = inputs()
    prev = torch.randn(2, H, 5, 6)
    with torch.no_grad():
        gated.gate_bias.fill_(bias)  # g = sigmoid(w·c + b) → 0 or 1
        _, s = plain(x_q, x_kv, key_mask=key_mask)
        _, n = gated(x_q, x_kv, key_mask=key_mask, prev=prev)
    torch.testing.assert_close(n, expected(s, prev))


def test_residual_mode_adds_previous_scores():
    torch.manual_seed(0)
    attn = ResidualAttention(D, H, mode="residual")
    x_q, _, x_kv, key_mask = inputs()
    prev = torch.randn(2, H, 5, 6)
    _, s = attn(x_q, x_kv, key_mask=key_mask)
    _, n = attn(x_q, x_kv, key_mask=key_mask, prev=prev)
    torch.testing.assert_close(n, s + prev)


def test_interaction_layers_thread_scores_and_first_layer_is_plain():
    stack = RADMInteraction(D, n_layers=3, n_heads=H, mode="gated", dropout=0.0)
    modes = [[m.mode for m in layer.modules() if isinstance(m, ResidualAttention)] for layer in stack.layers]
    assert modes == [["none"] * 4, ["gated"] * 4, ["gated"] * 4]
    gates = [n for n, _ in stack.named_parameters() if "gate_" in n]
    assert len(gates) == 2 * 4 * 2 and not any(n.startswith("layers.0.") for n in gates)
    out = stack(*inputs(), return_attentions=True)
    assert isinstance(out, FusionOutput) and out.text.shape == (2, 5, D) and out.image.shape == (2, 6, D)
    shapes = {k: [tuple(s.shape) for s in v] for k, v in out.attentions.items()}
    assert shapes == {"tt": [(2, H, 5, 5)] * 3, "ii": [(2, H, 6, 6)] * 3, "ti": [(2, H, 5, 6)] * 3,
                      "it": [(2, H, 6, 5)] * 3}
    assert stack(*inputs()).attentions is None


@pytest.mark.parametrize("mode", ["gated", "residual", "none"])
def test_gradients_reach_first_layer_scores_through_the_last_layer(mode):
    """Feed the first layer's scores (detached, as leaves) and *detached* states into layers 2..3:
    the scores can then reach the loss only through the threaded ``prev`` streams."""
    torch.manual_seed(0)
    stack = RADMInteraction(D, n_layers=3, n_heads=H, mode=mode, dropout=0.0)
    text, text_mask, image, image_mask = inputs()
    text, image, scores = stack.layers[0](text, text_mask, image, image_mask)
    first = {k: v.detach().requires_grad_() for k, v in scores.items()}
    text, image, prev = text.detach(), image.detach(), first
    for layer in stack.layers[1:]:
        text, image, prev = layer(text, text_mask, image, image_mask, prev)
    # through the last layer's scores alone ... (the three gradient calls share the graph of layers 2..3,
    # so all but the last keep it: autograd frees the saved tensors of every node a call went through)
    grads = torch.autograd.grad(sum(v.sum() for v in prev.values()), list(first.values()), allow_unused=True,
                                retain_graph=True)
    # ... and through its outputs
    out_grads = torch.autograd.grad(text.square().sum() + image.square().sum(), list(first.values()),
                                    allow_unused=True, retain_graph=True)
    for stream, g, g_out in zip(first, grads, out_grads):
        if mode == "none":
            assert g is None and g_out is None, stream  # plain attention: nothing reads previous scores
        else:
            assert g is not None and g.abs().sum() > 0, stream
            assert g_out is not None and g_out.abs().sum() > 0, stream
    if mode == "gated":
        last = stack.layers[-1].text_cross.attention
        loss = text.square().sum()
        gate_grads = torch.autograd.grad(loss, [last.gate_weight, last.gate_bias])
        assert all(g.abs().sum() > 0 for g in gate_grads)


def test_padding_does_not_change_real_positions():
    torch.manual_seed(0)
    stack = RADMInteraction(D, n_layers=2, n_heads=H, dropout=0.0).eval()
    text, text_mask, image, image_mask = inputs()
    ref = stack(text, text_mask, image, image_mask)
    # garbage in the padded positions, and three more padded text positions
    text2 = torch.cat([torch.where(text_mask[..., None], text, 100.0), torch.randn(2, 3, D)], dim=1)
    mask2 = torch.cat([text_mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    image2 = torch.where(image_mask[..., None], image, -50.0)
    out = stack(text2, mask2, image2, image_mask)
    torch.testing.assert_close(out.text[:, :5][text_mask], ref.text[text_mask], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.image[image_mask], ref.image[image_mask], rtol=1e-4, atol=1e-5)


def test_rm_c_really_removes_cross_modal_attention():
    full = RADMInteraction(D, n_layers=2, n_heads=H, dropout=0.0)
    rm_c = RADMInteraction(D, n_layers=2, n_heads=H, dropout=0.0, cross_modal=False).eval()
    names = [n for n, _ in rm_c.named_modules()]
    assert not any("cross" in n for n in names) and any("cross" in n for n, _ in full.named_modules())
    cross = sum(p.numel() for n, p in full.named_parameters() if "cross" in n)
    assert sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in rm_c.parameters()) == cross > 0
    text, text_mask, image, image_mask = inputs()
    out = rm_c(text, text_mask, image, image_mask, return_attentions=True)
    assert set(out.attentions) == {"tt", "ii"}
    other = rm_c(text, text_mask, torch.randn_like(image), image_mask)
    torch.testing.assert_close(other.text, out.text, rtol=0, atol=0)  # the text never sees the image


def test_self_fusion_joins_and_splits_the_sequences():
    torch.manual_seed(0)
    block = SelfFusionEncoder(D, n_layers=2, n_heads=H, dropout=0.0).eval()
    text, text_mask, image, image_mask = inputs()
    out = block(text, text_mask, image, image_mask, return_attentions=True)
    assert out.text.shape == text.shape and out.image.shape == image.shape
    assert [tuple(s.shape) for s in out.attentions["joint"]] == [(2, H, 11, 11)] * 2
    junk = block(text, text_mask, torch.where(image_mask[..., None], image, 9.0), image_mask)
    torch.testing.assert_close(junk.text, out.text, rtol=1e-4, atol=1e-5)  # padded image tokens are ignored


def test_fusion_input_errors_and_impl_switch():
    stack = RADMInteraction(D, n_layers=2, n_heads=H)
    text, text_mask, image, image_mask = inputs()
    with pytest.raises(TypeError, match=r"radm-interaction: text_mask must be a bool tensor .* got torch.int64"):
        stack(text, text_mask.long(), image, image_mask)
    with pytest.raises(ValueError, match="radm-interaction: text has batch size 2 but image has 1"):
        stack(text, text_mask, image[:1], image_mask[:1])
    with pytest.raises(ValueError, match=r"radm-interaction: image must be \[B, L, d_model=16\], got \(2, 6, 8\)"):
        stack(text, text_mask, image[..., :8], image_mask)
    with pytest.raises(mmfuse.ConfigError, match="n_heads: must divide d_model=16, got 5"):
        RADMInteraction(D, n_heads=5)
    assert set_attention_impl(stack, "reference") == 8
    assert {m.impl for m in stack.modules() if isinstance(m, ResidualAttention)} == {"reference"}
    with pytest.raises(ValueError, match="impl: expected one of 'auto', 'fused', 'reference', got 'cuda'"):
        set_attention_impl(stack, "cuda")
