"""A tiny model implementing the fusion protocol, and the 2-process worker of the ITC DDP test.

Kept outside the test modules so that spawned workers import only this (light) module.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

import mmfuse
from mmfuse.core.outputs import ClassificationOutput
from mmfuse.core.features import FeatureDims, Features

VOCAB, SEQ, PATCHES = 30, 5, 4


class ToyFusionModel(nn.Module):
    """Mean-pooled token embeddings + linear patch features → concat → tanh MLP → classifier.

    ``report_features=False`` leaves ``text_features`` / ``image_features`` / ``fused`` out of
    the output, so auxiliary losses must call the protocol methods themselves.
    """

    def __init__(self, d: int = 8, n_classes: int = 3, image_dim: int | None = None, declare_dims: bool = True,
                 report_features: bool = True) -> None:
        super().__init__()
        image_dim = image_dim or d
        self.embed = nn.Embedding(VOCAB, d)
        self.patch = nn.Linear(3, image_dim)
        self.mix = nn.Linear(d + image_dim, 2 * d)
        self.classifier = nn.Linear(2 * d, n_classes)
        if declare_dims:
            self.feature_dims = FeatureDims(text=d, image=image_dim, fused=2 * d)
        self.report_features = report_features
        self.calls = {"encode_text": 0, "encode_image": 0, "fuse": 0, "fuse_rows": 0}

    def encode_text(self, batch: Mapping[str, Any]) -> Features:
        self.calls["encode_text"] += 1
        tokens = self.embed(batch["input_ids"])
        mask = batch["attention_mask"].bool()
        pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return Features(tokens, mask, pooled)

    def encode_image(self, batch: Mapping[str, Any]) -> Features:
        self.calls["encode_image"] += 1
        tokens = self.patch(batch["pixel_values"].flatten(2).transpose(1, 2))
        return Features(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool), tokens.mean(1))

    def fuse(self, text: Features, image: Features) -> torch.Tensor:
        self.calls["fuse"] += 1
        self.calls["fuse_rows"] += text.batch_size
        return torch.tanh(self.mix(torch.cat([text.pooled, image.pooled], dim=-1)))

    def forward(self, batch: Mapping[str, Any]) -> ClassificationOutput:
        text, image = self.encode_text(batch), self.encode_image(batch)
        fused = self.fuse(text, image)
        logits = self.classifier(fused)
        loss, losses = None, {}
        if "labels" in batch:
            loss = losses["sentiment"] = F.cross_entropy(logits, batch["labels"]["sentiment"])
        if not self.report_features:
            return ClassificationOutput(loss=loss, losses=losses, logits={"sentiment": logits})
        return ClassificationOutput(loss=loss, losses=losses, text_features=text, image_features=image,
                                    logits={"sentiment": logits}, fused=fused)


class NoProtocolModel(nn.Module):
    """Has encode_text only: not usable with auxiliary losses."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def encode_text(self, batch: Mapping[str, Any]) -> Features:
        raise AssertionError("never called")


class ToyModelsPlugin:
    @mmfuse.hookimpl
    def mmfuse_models(self):
        return {"test-aux-toy": ToyFusionModel, "test-no-protocol": NoProtocolModel}


def make_batch(batch_size: int, seed: int = 0, labels: bool = True) -> dict[str, Any]:
    """A batch of distinct random pairs for :class:`ToyFusionModel`."""
    g = torch.Generator().manual_seed(seed)
    batch: dict[str, Any] = {
        "input_ids": torch.randint(0, VOCAB, (batch_size, SEQ), generator=g),
        "attention_mask": torch.ones(batch_size, SEQ, dtype=torch.long),
        "pixel_values": torch.randn(batch_size, 3, 2, PATCHES // 2, generator=g),
    }
    if labels:
        batch["labels"] = {"sentiment": torch.randint(0, 3, (batch_size,), generator=g)}
    return batch


# ---------------------------------------------------------------------------------------
# DDP worker (run by torch.multiprocessing.spawn in tests/test_itc.py)
# ---------------------------------------------------------------------------------------
def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
        raise AssertionError(f"{what}: max abs diff {(a - b).abs().max().item():.3g}")


def ddp_itc_worker(rank: int, world: int, init_file: str) -> None:
    """Checks, on each of ``world`` gloo ranks, that the gathered ITC equals the single-process
    ITC over the concatenated batch (loss, feature, parameter and temperature gradients), for
    unequal (3/2) and equal per-rank batches, and that a DDP-wrapped model with ITC attached
    gets the single-process parameter gradients."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from mmfuse.losses.itc import ITCLoss

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for sizes in ([3, 2], [2, 2]):
            torch.manual_seed(0)
            itc = ITCLoss(text_dim=6, image_dim=5, embed_dim=4)
            single = ITCLoss(text_dim=6, image_dim=5, embed_dim=4, gather_distributed=False)
            single.load_state_dict(itc.state_dict())
            text_all = torch.randn(sum(sizes), 6)
            image_all = torch.randn(sum(sizes), 5)
            start = sum(sizes[:rank])
            rows = slice(start, start + sizes[rank])

            text = text_all[rows].clone().requires_grad_(True)
            image = image_all[rows].clone().requires_grad_(True)
            out = itc.contrastive(text, image)
            assert out.offset == start, (out.offset, start)
            out.loss.backward()

            ref_text, ref_image = text_all.clone().requires_grad_(True), image_all.clone().requires_grad_(True)
            ref = single.contrastive(ref_text, ref_image)
            ref.loss.backward()

            # per-rank loss: sum over ranks = world × single-process loss
            total = out.loss.detach().clone()
            dist.all_reduce(total)
            _close(total / world, ref.loss.detach(), f"{sizes} loss")
            # local features get world × the single-process gradient of their rows
            _close(text.grad, world * ref_text.grad[rows], f"{sizes} text grad")
            _close(image.grad, world * ref_image.grad[rows], f"{sizes} image grad")
            # parameters (projections, temperature): the DDP average equals the single-process gradient
            for (name, p), q in zip(itc.named_parameters(), single.parameters()):
                grad = p.grad.clone()
                dist.all_reduce(grad)
                _close(grad / world, q.grad, f"{sizes} {name} grad")
            # the similarity shared with ITM is the block of this rank's own pairs
            _close(out.local_similarity(), ref.logits_per_text.detach()[rows, rows], f"{sizes} local similarity")

        # end to end: DDP(model with ITC attached) vs the single-process model on the whole batch
        config = {"model": "test-aux-toy", "aux_losses": [{"name": "itc", "weight": 0.5}]}
        mmfuse.register_plugin(ToyModelsPlugin(), name="test-aux-toy-plugin")
        torch.manual_seed(1)
        model = mmfuse.build_model(config)
        reference = mmfuse.build_model(config)
        reference.load_state_dict(model.state_dict())
        batch = make_batch(4, seed=3)
        local = {k: v[2 * rank : 2 * rank + 2] for k, v in batch.items() if k != "labels"}
        local["labels"] = {"sentiment": batch["labels"]["sentiment"][2 * rank : 2 * rank + 2]}
        ddp = DistributedDataParallel(model)
        out = ddp(local)
        assert set(out.losses) == {"sentiment", "itc"}, out.losses
        out.loss.backward()
        ref = reference(batch)
        ref.loss.backward()
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            _close(p.grad, q.grad, f"DDP model {name} grad")
    finally:
        dist.destroy_process_group()
