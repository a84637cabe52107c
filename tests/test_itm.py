"""ITM: hard-negative sampling (never the pair nor a duplicate), balanced labels, batch-size-1 rule."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfuse.losses.auxiliary import AuxiliaryInputs
from mmfuse.losses.itm import ITMLoss, duplicate_mask, sample_negatives
from mmfuse.core.features import Features


def features(pooled: torch.Tensor) -> Features:
    b = pooled.shape[0]
    return Features(pooled[:, None, :], torch.ones(b, 1, dtype=torch.bool), pooled)


class Fuser(torch.nn.Module):
    """fuse(text, image) = tanh(W [t; v]); counts the rows it fuses."""

    def __init__(self, d: int = 4) -> None:
        super().__init__()
        self.mix = torch.nn.Linear(2 * d, 6)
        self.rows = 0

    def forward(self, text: Features, image: Features) -> torch.Tensor:
        self.rows += text.batch_size
        return torch.tanh(self.mix(torch.cat([text.pooled, image.pooled], -1)))


def make_inputs(batch_size: int, d: int = 4, seed: int = 0, batch=None, **kw) -> tuple[AuxiliaryInputs, Fuser]:
    g = torch.Generator().manual_seed(seed)
    fuser = Fuser(d)
    text = features(torch.randn(batch_size, d, generator=g, requires_grad=False))
    image = features(torch.randn(batch_size, d, generator=g))
    if batch is None:
        batch = {"text_ids": list(range(batch_size)), "image_ids": list(range(batch_size))}
    return AuxiliaryInputs(batch=batch, text=text, image=image, fuse=fuser, **kw), fuser


@settings(max_examples=60, deadline=None)
@given(data=st.data(), batch_size=st.integers(1, 8))
def test_sampled_negatives_are_never_the_pair_or_a_duplicate(data, batch_size):
    sim = torch.tensor(data.draw(st.lists(
        st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=batch_size, max_size=batch_size),
        min_size=batch_size, max_size=batch_size)))
    text_ids = data.draw(st.lists(st.integers(0, 3), min_size=batch_size, max_size=batch_size))
    image_ids = data.draw(st.lists(st.integers(0, 3), min_size=batch_size, max_size=batch_size))
    same = duplicate_mask({"text_ids": text_ids, "image_ids": image_ids}, batch_size)
    allowed = ~same
    for matrix in (sim, sim.T):
        rows, picks = sample_negatives(matrix, allowed, generator=torch.Generator().manual_seed(0))
        assert rows.tolist() == [i for i in range(batch_size) if allowed[i].any()]
        for i, j in zip(rows.tolist(), picks.tolist()):
            assert i != j and text_ids[i] != text_ids[j] and image_ids[i] != image_ids[j]


def test_negatives_follow_the_softmax_of_similarities():
    row = torch.tensor([5.0, 0.0, 1.0, 2.0])  # column 0 is the pair itself
    allowed = torch.tensor([False, True, True, True])
    n = 20000
    _, picks = sample_negatives(row.expand(n, 4), allowed.expand(n, 4), generator=torch.Generator().manual_seed(0))
    freq = np.bincount(picks.numpy(), minlength=4) / n
    want = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    assert freq[0] == 0
    np.testing.assert_allclose(freq[1:], want, atol=0.015)


def test_duplicate_mask_by_content_and_by_ids():
    ids = torch.tensor([[5, 6, 0], [5, 6, 9], [7, 8, 0], [1, 2, 3]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 1]])  # rows 0 and 1 differ only in padding
    pixels = torch.randn(4, 3, 2, 2)
    pixels[3] = pixels[2]  # the same image twice
    same = duplicate_mask({"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}, 4)
    expected = torch.eye(4, dtype=torch.bool)
    expected[0, 1] = expected[1, 0] = expected[2, 3] = expected[3, 2] = True
    assert torch.equal(same, expected)
    by_ids = duplicate_mask({"text_ids": ["a", "b", "a", "c"], "input_ids": ids}, 4)  # ids win over content
    assert by_ids[0, 2] and not by_ids[0, 1]
    with pytest.raises(ValueError, match="expected 4"):
        duplicate_mask({"image_ids": [1, 2]}, 4)


@pytest.mark.parametrize("batch_size", [2, 3, 7])
def test_pairs_are_balanced(batch_size):
    inputs, _ = make_inputs(batch_size)
    pairs = ITMLoss(fused_dim=6).pairs(inputs)
    labels = pairs.labels
    assert labels[:batch_size].tolist() == [1] * batch_size and pairs.num_negatives == 2 * batch_size
    assert pairs.text_index[:batch_size].tolist() == pairs.image_index[:batch_size].tolist() == list(range(batch_size))
    assert (pairs.text_index[batch_size:] != pairs.image_index[batch_size:]).all()
    assert pairs.weights[labels == 1].sum().item() == pytest.approx(0.5)
    assert pairs.weights[labels == 0].sum().item() == pytest.approx(0.5)


def test_duplicates_shrink_the_negatives_but_keep_the_balance():
    # pairs 0 and 1 share their text: each has only pair 2 as a candidate; pair 2 can use 0 or 1
    inputs, _ = make_inputs(3, batch={"text_ids": [0, 0, 1], "image_ids": [0, 1, 2]})
    pairs = ITMLoss(fused_dim=6).pairs(inputs)
    neg = pairs.labels == 0
    for t, i in zip(pairs.text_index[neg].tolist(), pairs.image_index[neg].tolist()):
        assert {t, i} != {0, 1} and t != i
    assert pairs.weights[neg].sum().item() == pytest.approx(0.5)


def test_loss_equals_balanced_cross_entropy_of_the_drawn_pairs():
    itm = ITMLoss(fused_dim=6)
    inputs, fuser = make_inputs(5)
    torch.manual_seed(3)
    loss = itm(inputs)
    torch.manual_seed(3)
    pairs = itm.pairs(inputs)
    with torch.no_grad():
        logits = itm.head(fuser(inputs.text.select(pairs.text_index), inputs.image.select(pairs.image_index)))
    logp = torch.log_softmax(logits.double(), -1).numpy()
    labels = pairs.labels.numpy()
    ce = -logp[np.arange(len(labels)), labels]
    want = 0.5 * ce[labels == 1].mean() + 0.5 * ce[labels == 0].mean()
    assert loss.item() == pytest.approx(want, rel=1e-5)


def test_batch_of_one_contributes_zero_with_one_warning():
    itm = ITMLoss(fused_dim=6)
    inputs, fuser = make_inputs(1)
    with pytest.warns(RuntimeWarning, match="ITM loss is 0"):
        loss = itm(inputs)
    assert loss.item() == 0.0 and loss.requires_grad and fuser.rows == 0
    loss.backward()
    assert all(p.grad is not None and not p.grad.any() for p in itm.head.parameters())  # DDP sees every param
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert itm(make_inputs(1)[0]).item() == 0.0  # warned once only
    all_duplicates, _ = make_inputs(3, batch={"image_ids": [4, 4, 4]})
    assert itm(all_duplicates).item() == 0.0


def test_uses_the_shared_similarity_and_reuses_fused_positives():
    batch_size = 4
    sim = torch.full((batch_size, batch_size), -50.0)
    hardest = [2, 3, 0, 1]  # text i is most similar to image hardest[i] (and image hardest[i] to text i)
    for i, j in enumerate(hardest):
        sim[i, j] = 50.0
    inputs, fuser = make_inputs(batch_size, similarity=sim, fused=torch.zeros(batch_size, 6))
    pairs = ITMLoss(fused_dim=6).pairs(inputs)
    neg = pairs.labels == 0
    got = sorted(zip(pairs.text_index[neg].tolist(), pairs.image_index[neg].tolist()))
    assert got == sorted([(i, j) for i, j in enumerate(hardest)] * 2)
    ITMLoss(fused_dim=6)(inputs)
    assert fuser.rows == 2 * batch_size  # positives came from inputs.fused


def test_without_itc_uses_pooled_cosine_or_fails_clearly():
    itm = ITMLoss(fused_dim=6, temperature=0.5)
    inputs, _ = make_inputs(3)
    t = torch.nn.functional.normalize(inputs.text.pooled, dim=-1)
    v = torch.nn.functional.normalize(inputs.image.pooled, dim=-1)
    torch.testing.assert_close(itm.similarity(inputs), t @ v.T / 0.5)
    inputs.image = features(torch.randn(3, 5))
    with pytest.raises(ValueError, match="attach an 'itc' loss"):
        itm(inputs)
    assert ITMLoss(fused_dim=6, negatives="random").pairs(inputs).num_negatives == 6  # no similarity needed


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="negatives"):
        ITMLoss(fused_dim=4, negatives="easy")
    with pytest.raises(ValueError, match="fused_dim"):
        ITMLoss(fused_dim=0)
