"""Worker for tests/test_train_ddp.py, started by ``python -m torch.distributed.run --nproc_per_node 2``.

Trains the tiny RADM for a few steps on gloo and writes, per rank, a JSON report: a fingerprint
of the final weights, the dev metrics this rank computed and the number of dev items it scored.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_support import synthetic, tiny_model  # noqa: E402

from mmfuse.train import Trainer, TrainingArguments  # noqa: E402

torch.set_num_threads(1)
output_dir = Path(sys.argv[1])
model = tiny_model(aux_losses=[{"name": "itc", "weight": 0.1}])  # ITC gathers features across the ranks
args = TrainingArguments(
    output_dir=str(output_dir), num_epochs=3, batch_size=12, learning_rate=3e-3, warmup_ratio=0.0,
    logging_steps=1, eval_strategy="epoch", progress_bar=False, tensorboard=False, seed=5,
)
train, dev = synthetic("train", 96), synthetic("dev", 21)  # 21 dev items: the shards are 11 + 10
trainer = Trainer(model, args, train, dev)
out = trainer.train()
rank = dist.get_rank()
weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
report = {
    "rank": rank,
    "world_size": dist.get_world_size(),
    "weights_sum": float(weights.double().sum()),
    "weights_abs_sum": float(weights.double().abs().sum()),
    "metrics": out.metrics,
    "dev_items_scored": len(list(range(rank, len(dev), dist.get_world_size()))),
}
(output_dir / f"report_{rank}.json").write_text(json.dumps(report))
dist.destroy_process_group()
