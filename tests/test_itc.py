"""ITC: CLIP's loss (against an independent numpy version), the temperature, DDP gathering."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from aux_toy_models import ddp_itc_worker
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfuse.losses.auxiliary import AuxiliaryInputs
from mmfuse.losses.itc import ITCLoss
from mmfuse.core.features import Features


def clip_loss_numpy(text, image, wt, bt, wi, bi, logit_scale):
    """CLIP's symmetric cross-entropy, written from the paper's pseudo-code in float64 numpy."""
    zt = text @ wt.T + bt
    zi = image @ wi.T + bi
    zt = zt / np.linalg.norm(zt, axis=1, keepdims=True)
    zi = zi / np.linalg.norm(zi, axis=1, keepdims=True)
    logits = np.exp(logit_scale) * zt @ zi.T  # [n_text, n_image]

    def cross_entropy(rows):  # target of row k is column k
        shifted = rows - rows.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -np.mean(np.diag(log_probs))

    return (cross_entropy(logits) + cross_entropy(logits.T)) / 2


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 9), text_dim=st.integers(1, 7), image_dim=st.integers(1, 7),
       log_scale=st.floats(0.0, math.log(100.0)), seed=st.integers(0, 2**16))
def test_itc_equals_independent_clip_loss(batch, text_dim, image_dim, log_scale, seed):
    torch.manual_seed(seed)
    itc = ITCLoss(text_dim=text_dim, image_dim=image_dim, embed_dim=5)
    with torch.no_grad():
        itc.logit_scale.fill_(log_scale)
    text, image = torch.randn(batch, text_dim), torch.randn(batch, image_dim)
    got = itc.contrastive(text, image).loss.item()
    want = clip_loss_numpy(_np(text), _np(image), _np(itc.text_proj.weight), _np(itc.text_proj.bias),
                           _np(itc.image_proj.weight), _np(itc.image_proj.bias), log_scale)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_matched_pairs_give_lower_loss_than_shuffled():
    torch.manual_seed(0)
    itc = ITCLoss(text_dim=4, image_dim=4, embed_dim=4)
    with torch.no_grad():  # identity projections: matched rows are identical embeddings
        for proj in (itc.text_proj, itc.image_proj):
            proj.weight.copy_(torch.eye(4))
            proj.bias.zero_()
    x = torch.randn(6, 4)
    matched = itc.contrastive(x, x).loss
    shuffled = itc.contrastive(x, x.roll(1, dims=0)).loss
    assert matched < 0.5 * shuffled


def test_temperature_init_gradient_and_clamp():
    itc = ITCLoss(text_dim=3, image_dim=3, embed_dim=3)
    assert itc.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert itc.logit_scale.requires_grad and "logit_scale" in dict(itc.named_parameters())
    itc.contrastive(torch.randn(4, 3), torch.randn(4, 3)).loss.backward()
    assert itc.logit_scale.grad is not None and itc.logit_scale.grad.abs().item() > 0

    # an optimizer step that overshoots is clamped back before the next use (CLIP's clamp at 100)
    with torch.no_grad():
        itc.logit_scale += 10.0
    assert itc.logit_scale.item() > math.log(100)
    out = itc.contrastive(torch.randn(4, 3), torch.randn(4, 3))
    assert itc.logit_scale.item() == pytest.approx(math.log(100))
    assert out.logits_per_text.abs().max().item() <= 100 + 1e-4  # |cos| <= 1
    out.loss.backward()  # still learnable at the bound
    with torch.no_grad():
        itc.logit_scale.fill_(-3.0)
    assert itc.scale().item() == pytest.approx(1.0)  # lower clamp: scale >= 1


def test_fixed_temperature_is_a_buffer():
    itc = ITCLoss(text_dim=3, image_dim=3, temperature=0.5, learn_temperature=False)
    assert "logit_scale" not in dict(itc.named_parameters()) and "logit_scale" in itc.state_dict()
    assert itc.scale().item() == pytest.approx(2.0)


def test_forward_shares_the_local_similarity():
    torch.manual_seed(0)
    itc = ITCLoss(text_dim=4, image_dim=3, embed_dim=5)
    text = Features(torch.zeros(3, 1, 4), torch.ones(3, 1, dtype=torch.bool), torch.randn(3, 4, requires_grad=True))
    image = Features(torch.zeros(3, 1, 3), torch.ones(3, 1, dtype=torch.bool), torch.randn(3, 3))
    inputs = AuxiliaryInputs(batch={}, text=text, image=image, fuse=lambda t, i: None)
    loss = itc(inputs)
    zt, zi = itc.embed(text.pooled, image.pooled)
    assert inputs.similarity is not None and not inputs.similarity.requires_grad
    torch.testing.assert_close(inputs.similarity, itc.scale() * zt @ zi.T)
    assert loss.requires_grad


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="temperature"):
        ITCLoss(text_dim=3, image_dim=3, temperature=0.001)  # 1/T above the clamp
    with pytest.raises(ValueError, match="text_dim"):
        ITCLoss(text_dim=0, image_dim=3)
    with pytest.raises(ValueError, match="same pairs"):
        ITCLoss(text_dim=3, image_dim=3).contrastive(torch.randn(3, 3), torch.randn(2, 3))


def test_gathered_loss_gradients_equal_single_process_on_two_gloo_ranks(tmp_path):
    """2 CPU processes: local-feature grads = world × single-process grads; DDP-averaged
    parameter grads (and a DDP-wrapped model with ITC attached) = single-process grads."""
    # fork (as PyTorch's own gloo tests do): the workers skip re-importing torch and mmfuse
    mp.start_processes(ddp_itc_worker, args=(2, str(tmp_path / "rendezvous")), nprocs=2, join=True,
                       start_method="fork")
