"""The :class:`Trainer`: training loop, evaluation, checkpoints and exact resume for mmfuse models.

A model is anything whose ``forward(batch)`` returns an mmfuse ``ModelOutput`` (``loss`` to
back-propagate, named ``losses`` to log) and which has ``get_processor(train)``; the task
(:mod:`mmfuse.train.tasks`) supplies collation, metrics and prediction formatting.

One optimizer step = ``gradient_accumulation_steps`` micro-batches of ``batch_size`` samples per
process (the last step of an epoch may have fewer micro-batches; each micro-batch loss is
divided by the number of micro-batches in its step). Under ``torchrun`` the model is wrapped in
``DistributedDataParallel`` and each rank sees its shard of every epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from mmfuse.config import ConfigError
from mmfuse.train import checkpointing as ckpt
from mmfuse.train import console
from mmfuse.train.arguments import SCHEDULE_FIELDS, TrainingArguments
from mmfuse.train.distributed import DistributedContext, all_reduce_sum, barrier, setup_distributed
from mmfuse.train.loading import batch_size_of, make_loader, move_to_device
from mmfuse.train.logs import RunLogger
from mmfuse.train.optim import build_optimizer, linear_schedule, warmup_steps_for
from mmfuse.train.seeding import seed_everything
from mmfuse.train.tasks import LabelSchema, TrainTask, get_task

MODEL_DIR = "model"
EVAL_RESULTS_NAME = "eval_results.json"


@dataclasses.dataclass
class TrainerState:
    """Where training stands; saved in every checkpoint as ``trainer_state.json``."""

    global_step: int = 0
    epoch: int = 0  # epoch in progress (completed epochs before it)
    batches_in_epoch: int = 0  # micro-batches of ``epoch`` already consumed by this rank
    total_steps: int = 0
    best_metric: float | None = None
    best_checkpoint: str | None = None
    evaluations_without_improvement: int = 0
    stopped_early: bool = False
    world_size: int = 1
    args: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainerState:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclasses.dataclass
class TrainOutput:
    """What :meth:`Trainer.train` returns."""

    global_step: int
    best_metric: float | None
    best_checkpoint: str | None
    metrics: dict[str, float]  # dev metrics of the exported model (empty without an eval set)
    model_dir: Path | None
    stopped_early: bool


class TrainerCallback:
    """Hooks called on every rank; override what you need (all default to doing nothing)."""

    def on_step_end(self, trainer: Trainer, state: TrainerState) -> None: ...

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_evaluate(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _chunks(iterable: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def autocast_dtype(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``mixed_precision`` on ``device`` (None: full precision; always on CPU)."""
    if device.type != "cuda" or mixed_precision == "no":
        return None
    if mixed_precision == "bf16":
        return torch.bfloat16
    if mixed_precision == "fp16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class Trainer:
    """Train and evaluate an mmfuse model.

    Args:
        model: the model (built with :func:`mmfuse.build_model`, so checkpoints can rebuild it).
        args: :class:`TrainingArguments`.
        train_dataset / eval_dataset: raw-sample data sets (e.g. from :func:`mmfuse.data.build_dataset`).
        task: a task name from :mod:`mmfuse.train.tasks` or a :class:`TrainTask`.
        label_schema: the task's label description; default: ``task.label_schema(train_dataset)``.
        run_info: extra JSON saved in ``task.json``; its ``dataset`` defaults to how
            :func:`mmfuse.data.build_dataset` made the training set (name, data_dir, options), which
            ``mmfuse eval`` / ``predict`` reuse when no ``--dataset`` is given.
        callbacks: :class:`TrainerCallback` objects.

    Call :func:`mmfuse.train.seed_everything` (``args.seed``) *before* building the model for
    reproducible initial weights; the trainer seeds everything else.
    """

    def __init__(
        self,
        model: nn.Module,
        args: TrainingArguments,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | None = None,
        *,
        task: str | TrainTask = "classification",
        label_schema: LabelSchema | None = None,
        run_info: Mapping[str, Any] | None = None,
        callbacks: Sequence[TrainerCallback] = (),
    ) -> None:
        if not isinstance(args, TrainingArguments):
            raise TypeError(f"args: expected TrainingArguments, got {type(args).__name__}")
        for method in ("forward", "get_processor"):
            if not callable(getattr(model, method, None)):
                raise TypeError(f"model: {type(model).__name__} has no {method}() (needed by the trainer)")
        self.args = args
        self.task = get_task(task)
        source = train_dataset if train_dataset is not None else eval_dataset
        if label_schema is None and source is None:
            raise ValueError("label_schema: required when neither train_dataset nor eval_dataset is given")
        self.label_schema = label_schema if label_schema is not None else self.task.label_schema(source)
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.run_info = dict(run_info or {})
        spec = getattr(train_dataset if train_dataset is not None else eval_dataset, "build_spec", None)
        if "dataset" not in self.run_info and isinstance(spec, Mapping):
            self.run_info["dataset"] = dict(spec)  # what build_dataset made it from: `mmfuse eval RUN` reuses it
        self.callbacks = list(callbacks)
        if args.torch_threads is not None:
            torch.set_num_threads(args.torch_threads)
        self.ctx: DistributedContext = setup_distributed(args.device)
        self.model = model.to(self.ctx.device)
        self.output_dir = Path(args.output_dir)
        self.checkpoint_dir = self.output_dir / ckpt.CHECKPOINTS_DIR
        self.autocast_dtype = autocast_dtype(args.mixed_precision, self.ctx.device)
        self.state = TrainerState(world_size=self.ctx.world_size, args=args.to_dict())
        self.logger: RunLogger | None = None

    # -- information -----------------------------------------------------------------------
    @property
    def task_info(self) -> dict[str, Any]:
        """What ``task.json`` holds: the task, its label schema and ``run_info``."""
        return {"task": self.task.name, "labels": self.label_schema, **self.run_info}

    @property
    def metric_name(self) -> str:
        return self.args.metric_for_best_model

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.ctx.device.type, dtype=self.autocast_dtype)

    def _collator(self, train: bool, return_ids: bool = False) -> Any:
        processor = _unwrap(self.model).get_processor(train=train)
        return self.task.build_collator(processor, self.label_schema, return_ids)

    # -- evaluation ------------------------------------------------------------------------
    def evaluation_loader(self, dataset: Dataset, return_ids: bool = False) -> Any:
        """This rank's shard of ``dataset`` in order, batched with the evaluation processor."""
        return make_loader(
            dataset, self._collator(train=False, return_ids=return_ids), self.args.per_device_eval_batch_size,
            seed=self.args.seed, rank=self.ctx.rank, world_size=self.ctx.world_size, shuffle=False,
            num_workers=self.args.num_workers, pin_memory=self.ctx.device.type == "cuda",
        )

    @torch.no_grad()
    def evaluate(self, dataset: Dataset | None = None) -> dict[str, float]:
        """The task's metrics on ``dataset`` (default: the eval set) plus the mean ``loss``.

        Under DDP every rank scores its shard and the counts are summed, so each rank returns
        the metrics of the whole set (every item counted once).
        """
        dataset = dataset if dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("evaluate: no data set (pass one, or give the Trainer an eval_dataset)")
        model = _unwrap(self.model)
        was_training = model.training
        model.eval()
        evaluator = self.task.build_evaluator(self.label_schema)
        totals = torch.zeros(2, dtype=torch.float64)  # loss · rows, rows with a loss
        loader = self.evaluation_loader(dataset)
        try:
            for batch in console.eval_progress(loader, len(loader), self.ctx.is_main and self.args.progress_bar):
                if batch is None:
                    continue
                batch = move_to_device(batch, self.ctx.device)
                with self._autocast():
                    output = model(batch)
                if output.loss is not None:
                    rows = batch_size_of(batch)
                    totals += torch.tensor([float(output.loss) * rows, rows], dtype=torch.float64)
                evaluator.update(batch, output)
        finally:
            model.train(was_training)
        evaluator.sync()
        totals = all_reduce_sum(totals, self.ctx)
        metrics = dict(evaluator.compute())
        if totals[1] > 0:
            metrics["loss"] = float(totals[0] / totals[1])
        return metrics

    @torch.no_grad()
    def predict(self, dataset: Dataset) -> list[dict[str, Any]]:
        """One formatted prediction per item of ``dataset`` (this rank's shard under DDP)."""
        model = _unwrap(self.model)
        was_training = model.training
        model.eval()
        rows: list[dict[str, Any]] = []
        loader = self.evaluation_loader(dataset, return_ids=True)
        try:
            for batch in console.eval_progress(loader, len(loader), self.ctx.is_main and self.args.progress_bar):
                if batch is None:
                    continue
                batch = move_to_device(batch, self.ctx.device)
                with self._autocast():
                    output = model(batch)
                rows.extend(self.task.format_predictions(batch, output, self.label_schema))
        finally:
            model.train(was_training)
        return rows

    # -- training --------------------------------------------------------------------------
    def _train_loader(self, epoch: int, skip_batches: int) -> Any:
        assert self.train_dataset is not None
        return make_loader(
            self.train_dataset, self._train_collate, self.args.batch_size, seed=self.args.seed, epoch=epoch,
            rank=self.ctx.rank, world_size=self.ctx.world_size, shuffle=True, skip_batches=skip_batches,
            num_workers=self.args.num_workers, pin_memory=self.ctx.device.type == "cuda",
        )

    def _resolve_resume(self, resume_from_checkpoint: str | Path | bool | None) -> Path | None:
        if resume_from_checkpoint in (None, False):
            return None
        if resume_from_checkpoint is True:
            found = ckpt.find_latest_checkpoint(self.checkpoint_dir)
            if found is None:
                raise FileNotFoundError(f"resume: no complete checkpoint under {str(self.checkpoint_dir)!r}")
            return found
        path = Path(resume_from_checkpoint)
        if (path / ckpt.CHECKPOINTS_DIR).is_dir():  # an output_dir: its latest checkpoint
            found = ckpt.find_latest_checkpoint(path / ckpt.CHECKPOINTS_DIR)
            if found is None:
                raise FileNotFoundError(f"resume: no complete checkpoint under {str(path / ckpt.CHECKPOINTS_DIR)!r}")
            return found
        if not ckpt.is_complete_checkpoint(path):
            raise FileNotFoundError(f"resume: {str(path)!r} is not a complete training checkpoint")
        return path

    def _check_resumable(self, saved: TrainerState, path: Path) -> None:
        saved_args = saved.args
        changed = [f for f in SCHEDULE_FIELDS if f in saved_args and saved_args[f] != getattr(self.args, f)]
        if saved.world_size != self.ctx.world_size:
            changed.append(f"world size ({saved.world_size} → {self.ctx.world_size})")
        if changed:
            details = ", ".join(
                c if "→" in c else f"{c} ({saved_args[c]!r} → {getattr(self.args, c)!r})" for c in changed
            )
            raise ConfigError(
                f"resume: {str(path)!r} was written with different settings that define the batch / step "
                f"sequence: {details}; resume with the original settings"
            )

    def train(self, resume_from_checkpoint: str | Path | bool | None = None) -> TrainOutput:
        """Train; ``resume_from_checkpoint``: True (latest in ``output_dir``), a checkpoint or an output_dir."""
        if self.train_dataset is None:
            raise ValueError("train: the Trainer has no train_dataset")
        args, ctx = self.args, self.ctx
        if len(self.train_dataset) == 0:  # type: ignore[arg-type]
            raise ValueError("train_dataset: is empty")
        resume_path = self._resolve_resume(resume_from_checkpoint)
        seed_everything(args.seed)
        model = _unwrap(self.model)
        model.train()
        self._train_collate = self._collator(train=True)
        batches_per_epoch = self._train_loader(0, 0).batch_sampler.num_batches  # type: ignore[union-attr]
        steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
        total_steps = args.max_steps if args.max_steps is not None else args.num_epochs * steps_per_epoch
        optimizer = build_optimizer(model, args)
        scheduler = linear_schedule(optimizer, warmup_steps_for(args, total_steps), total_steps)
        scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        state = TrainerState(total_steps=total_steps, world_size=ctx.world_size, args=args.to_dict())
        if ctx.is_main:
            ckpt.clean_stale_temporaries(self.checkpoint_dir)
        if resume_path is not None:
            saved = TrainerState.from_dict(ckpt.load_trainer_state(resume_path))
            self._check_resumable(saved, resume_path)
            ckpt.load_training_checkpoint(
                resume_path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, ctx=ctx
            )
            state = dataclasses.replace(saved, args=args.to_dict())
        self.state = state
        wrapped: nn.Module = model
        if ctx.distributed:
            wrapped = DistributedDataParallel(
                model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=args.ddp_find_unused_parameters,
            )
        self.model = wrapped
        self.logger = RunLogger(self.output_dir, enabled=ctx.is_main, tensorboard=args.tensorboard)
        if resume_path is not None:
            self.logger.log("info", state.global_step, {"event": "resumed", "checkpoint": str(resume_path)})
        try:
            self._loop(wrapped, batches_per_epoch)
            metrics = self._finish()
        finally:
            self.logger.close()
            self.model = model
        return TrainOutput(
            global_step=state.global_step, best_metric=state.best_metric, best_checkpoint=state.best_checkpoint,
            metrics=metrics, model_dir=self.output_dir / MODEL_DIR, stopped_early=state.stopped_early,
        )

    def _loop(self, wrapped: nn.Module, batches_per_epoch: int) -> None:
        args, state = self.args, self.state
        progress = self._progress_bar(state)
        loop_start = time.perf_counter()
        window_sums: dict[str, float] = {}
        window_rows, window_start = 0, time.perf_counter()
        try:
            while state.global_step < state.total_steps and not state.stopped_early:
                epoch = state.epoch
                loader = self._train_loader(epoch, state.batches_in_epoch)
                for micro_batches in _chunks(loader, args.gradient_accumulation_steps):
                    sums, rows, grad_norm = self._optimizer_step(wrapped, micro_batches)
                    for key, value in sums.items():
                        window_sums[key] = window_sums.get(key, 0.0) + value
                    window_rows += rows
                    state.global_step += 1
                    state.batches_in_epoch += len(micro_batches)
                    epoch_done = state.batches_in_epoch >= batches_per_epoch
                    if epoch_done:
                        state.epoch, state.batches_in_epoch = epoch + 1, 0
                    progress.update(1)
                    last = state.global_step >= state.total_steps
                    if state.global_step % args.logging_steps == 0 or last:
                        record = self._log_train(window_sums, window_rows, window_start, grad_norm, batches_per_epoch)
                        progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
                        if self.ctx.is_main and not args.progress_bar:  # no bar: a line per logging window
                            console.log_training(state.global_step, state.total_steps, record,
                                                 time.perf_counter() - loop_start)
                        window_sums, window_rows, window_start = {}, 0, time.perf_counter()
                    self._maybe_evaluate_and_save(epoch_done, last, batches_per_epoch)
                    for callback in self.callbacks:
                        callback.on_step_end(self, state)
                    if last or state.stopped_early:
                        break
        finally:
            progress.close()

    def _optimizer_step(self, wrapped: nn.Module, micro_batches: list[Any]) -> tuple[dict[str, float], int, float]:
        """Forward/backward every micro-batch, clip, step; return (summed losses, rows, grad norm)."""
        args, ctx = self.args, self.ctx
        batches = [b for b in micro_batches if b is not None]
        if len(batches) != len(micro_batches) and ctx.distributed:
            raise RuntimeError(
                "train: a whole batch was dropped (every image in it became unreadable during training); "
                "this cannot be skipped consistently under DDP — fix or remove the files and resume"
            )
        sums: dict[str, torch.Tensor] = {}
        rows = 0
        for i, batch in enumerate(batches):
            batch = move_to_device(batch, ctx.device, non_blocking=True)
            sync = i == len(batches) - 1 or not isinstance(wrapped, DistributedDataParallel)
            with contextlib.nullcontext() if sync else wrapped.no_sync():  # type: ignore[operator]
                with self._autocast():
                    output = wrapped(batch)
                if output.loss is None:
                    raise ValueError("train: the model returned no loss; training batches need labels")
                self.scaler.scale(output.loss / len(batches)).backward()
            n = batch_size_of(batch)
            rows += n
            for name, value in {"loss": output.loss, **{f"losses/{k}": v for k, v in output.losses.items()}}.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float() * n
        grad_norm = float("nan")
        if batches:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            max_norm = args.max_grad_norm if args.max_grad_norm else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {k: float(v) for k, v in sums.items()}, rows, grad_norm

    def _log_train(self, sums: dict[str, float], rows: int, start: float, grad_norm: float,
                   batches_per_epoch: int) -> dict[str, Any]:
        """Log the window's mean losses (over all ranks' rows), learning rate, grad norm and throughput."""
        names = sorted(sums)
        totals = all_reduce_sum(torch.tensor([sums[n] for n in names] + [rows], dtype=torch.float64), self.ctx)
        total_rows = max(float(totals[-1]), 1.0)
        state = self.state
        record: dict[str, Any] = {
            "epoch": round(state.epoch + state.batches_in_epoch / batches_per_epoch, 4),
            **{name: float(totals[i]) / total_rows for i, name in enumerate(names)},
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": grad_norm,
            "samples_per_second": round(float(totals[-1]) / max(time.perf_counter() - start, 1e-9), 2),
        }
        record = self.logger.log("train", state.global_step, record)  # type: ignore[union-attr]
        for callback in self.callbacks:
            callback.on_log(self, record)
        return record

    def _maybe_evaluate_and_save(self, epoch_done: bool, last: bool, batches_per_epoch: int) -> None:
        args, state = self.args, self.state
        evaluate = self.eval_dataset is not None and (
            (args.eval_strategy == "epoch" and epoch_done)
            or (args.eval_strategy == "steps" and state.global_step % args.eval_steps == 0)  # type: ignore[operator]
            or (args.eval_strategy != "no" and last)
        )
        save = evaluate or last or (epoch_done and (args.eval_strategy == "no" or self.eval_dataset is None))
        name = ckpt.checkpoint_name(state.global_step)
        if evaluate:
            metrics = self.evaluate()
            if self.metric_name not in metrics:
                raise ConfigError(
                    f"training.metric_for_best_model: {self.metric_name!r} is not among the evaluation "
                    f"metrics {sorted(metrics)}"
                )
            value = metrics[self.metric_name]
            sign = 1.0 if args.greater_is_better else -1.0
            if state.best_metric is None or sign * (value - state.best_metric) > args.early_stopping_threshold:
                state.best_metric, state.best_checkpoint = value, name
                state.evaluations_without_improvement = 0
            else:
                state.evaluations_without_improvement += 1
                patience = args.early_stopping_patience
                if patience is not None and state.evaluations_without_improvement >= patience:
                    state.stopped_early = True
            epoch = round(state.epoch + state.batches_in_epoch / batches_per_epoch, 4)
            if self.ctx.is_main:
                console.log_evaluation(state.global_step, state.total_steps, epoch, metrics, self.metric_name,
                                       state.best_metric)
            self.logger.log("eval", state.global_step, {"epoch": epoch, **metrics,  # type: ignore[union-attr]
                                                         f"best_{self.metric_name}": state.best_metric})
            for callback in self.callbacks:
                callback.on_evaluate(self, metrics)
        if save:
            ckpt.save_training_checkpoint(
                self.checkpoint_dir, state.global_step, model=_unwrap(self.model), optimizer=self.optimizer,
                scheduler=self.scheduler, scaler=self.scaler, trainer_state=state.to_dict(),
                task_info=self.task_info, ctx=self.ctx,
            )
            if self.ctx.is_main:
                ckpt.rotate_checkpoints(self.checkpoint_dir, args.save_total_limit, protect=state.best_checkpoint)

    def _finish(self) -> dict[str, float]:
        """Load the best checkpoint's weights if asked, export ``output_dir/model``, summarise."""
        args, ctx, state = self.args, self.ctx, self.state
        model = _unwrap(self.model)
        if args.load_best_model_at_end and state.best_checkpoint is not None:
            from safetensors.torch import load_model

            load_model(model, str(self.checkpoint_dir / state.best_checkpoint / ckpt.WEIGHTS_NAME),
                       device=str(ctx.device))
        metrics: dict[str, float] = {}
        if self.eval_dataset is not None and args.eval_strategy != "no":
            metrics = self.evaluate()
            self.logger.log("final", state.global_step, {"checkpoint": state.best_checkpoint if args.load_best_model_at_end  # type: ignore[union-attr]
                                                         else None, **metrics})
            if ctx.is_main:
                console.log_final(state.best_checkpoint if args.load_best_model_at_end else None, metrics)
        if ctx.is_main:
            extra = {EVAL_RESULTS_NAME: metrics} if metrics else {}
            ckpt.export_model(model, self.output_dir / MODEL_DIR, self.task_info, extra)
            for dataset in (self.train_dataset, self.eval_dataset):
                summary = getattr(dataset, "summary", None)
                if callable(summary):
                    self.logger.log("info", state.global_step, {"event": "data", "summary": summary()})  # type: ignore[union-attr]
        barrier(ctx)
        return metrics

    def _progress_bar(self, state: TrainerState) -> Any:
        from tqdm.auto import tqdm

        return tqdm(
            total=state.total_steps, initial=state.global_step, desc="train", unit="step", dynamic_ncols=True,
            disable=not (self.ctx.is_main and self.args.progress_bar),
        )
