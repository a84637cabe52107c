"""The :class:`Trainer`: training loop, evaluation, checkpoints and exact resume for mmfuse models.

A model is anything whose ``forward(batch)`` returns an mmfuse ``ModelOutput`` (``loss`` to
back-propagate, named ``losses`` to log) and which has ``get_processor(train)``; the task
(:mod:`mmfuse.tasks.classification`) supplies collation, metrics and prediction formatting.

One optimizer step = ``gradient_accumulation_steps`` micro-batches of ``batch_size`` samples per
process (the last step of an epoch may have fewer micro-batches; each micro-batch loss is
divided by the number of micro-batches in its step). Under ``torchrun`` the model is wrapped in
``DistributedDataParallel`` and each rank sees its shard of every epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from mmfuse.models.checkpoint import load_weights
from mmfuse.core.config import ConfigError
from mmfuse.core.portable import portable_config
from mmfuse.core.provenance import METADATA_KEY
from mmfuse.train import checkpointing as ckpt
from mmfuse.train import console, run_dir
from mmfuse.train.arguments import SCHEDULE_FIELDS, TrainingArguments
from mmfuse.train.distributed import (
    DistributedContext,
    all_reduce_sum,
    barrier,
    broadcast_object,
    setup_distributed,
)
from mmfuse.train.guards import NonFiniteLossError, describe_value, nonfinite_parameters, step_is_finite
from mmfuse.train.loading import batch_size_of, make_loader, move_to_device
from mmfuse.train.logs import RunLogger
from mmfuse.train.optim import build_optimizer, build_scheduler
from mmfuse.train.resume import check_resume
from mmfuse.train.seeding import seed_everything
from mmfuse.train.signals import SignalCatcher, TrainingInterrupted
from mmfuse.tasks.base import LabelSchema, TrainTask, get_task

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
    nonfinite_steps_skipped: int = 0  # steps whose update was skipped (on_nonfinite_loss="skip")
    num_samples: dict[str, int | None] = dataclasses.field(default_factory=dict)  # {"train": n, "eval": n}
    args: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "trainer_state.json") -> TrainerState:
        """Build from a ``trainer_state.json`` mapping, checking every field (a hand-edited or hostile
        file is refused with a line naming ``source`` and the field, not a later crash)."""
        from mmfuse.models.checkpoint import CheckpointError

        known = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in values.items() if k in known})

        def bad(field: str, expected: str) -> CheckpointError:
            return CheckpointError(f"checkpoint file {source!r}: {field}: expected {expected}, "
                                   f"got {getattr(state, field)!r}")

        for field in ("global_step", "epoch", "batches_in_epoch", "total_steps", "evaluations_without_improvement",
                      "nonfinite_steps_skipped"):
            value = getattr(state, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(field, "an int >= 0")
        if isinstance(state.world_size, bool) or not isinstance(state.world_size, int) or state.world_size < 1:
            raise bad("world_size", "an int >= 1")
        if state.best_metric is not None and (isinstance(state.best_metric, bool)
                                              or not isinstance(state.best_metric, (int, float))):
            raise bad("best_metric", "a number or null")
        if state.best_checkpoint is not None and not (isinstance(state.best_checkpoint, str)
                                                      and re.fullmatch(r"checkpoint-[0-9]+", state.best_checkpoint)):
            raise bad("best_checkpoint", "a name checkpoint-<step> or null")
        if not isinstance(state.stopped_early, bool):
            raise bad("stopped_early", "true or false")
        if not isinstance(state.args, dict) or not isinstance(state.num_samples, dict):
            raise bad("args", "an object")
        return state


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

    def on_train_begin(self, trainer: Trainer, state: TrainerState) -> None:
        """After the output folder is locked and prepared and a resume was accepted, before the
        first step (``mmfuse train`` writes ``run.yaml`` here, so a refused run changes nothing)."""

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
        task: a task name from :mod:`mmfuse.tasks.classification` or a :class:`TrainTask`.
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
        self._signals: SignalCatcher | None = None
        self._saved_step: int | None = None  # global_step of the last checkpoint written by this run

    # -- information -----------------------------------------------------------------------
    @property
    def task_info(self) -> dict[str, Any]:
        """What ``task.json`` holds: the task, its label schema and ``run_info``."""
        return {"task": self.task.name, "labels": self.label_schema, **self.run_info}

    @property
    def metric_name(self) -> str:
        """``metric_for_best_model``, or the task's ``default_metric`` when it is not set."""
        return self.args.metric_for_best_model or self.task.default_metric

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
    def evaluate(self, dataset: Dataset | None = None, *, select: bool = False) -> dict[str, Any]:
        """The task's metrics on ``dataset`` (default: the eval set) plus the mean ``loss``.

        ``select`` (the trainer's evaluations during training): a task with a ``build_selector``
        hook also chooses its inference settings on ``dataset`` and applies them to the model
        (see :class:`~mmfuse.tasks.classification.TrainTask`).

        Under DDP every rank scores its shard and the counts are summed, so each rank returns
        the metrics of the whole set (every item counted once).
        """
        dataset = dataset if dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("evaluate: no data set (pass one, or give the Trainer an eval_dataset)")
        model = _unwrap(self.model)
        was_training = model.training
        model.eval()
        if select and self.task.build_selector is not None:
            evaluator = self.task.build_selector(self.label_schema, model)
        else:
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

    def _num_samples(self) -> dict[str, int | None]:
        return {name: (len(d) if d is not None else None)  # type: ignore[arg-type]
                for name, d in (("train", self.train_dataset), ("eval", self.eval_dataset))}

    def _saved_model_config(self) -> dict[str, Any] | None:
        """The model config as a checkpoint stores it (portable, without the provenance record), so that
        it compares equal to the ``config.json`` of a checkpoint of the same model."""
        model = _unwrap(self.model)
        config = getattr(model, "mmfuse_config", None)
        if config is None:
            return None
        with tempfile.TemporaryDirectory() as scratch:  # portable_config may write tokenizer files
            saved = portable_config(model, config, scratch)
        saved.pop(METADATA_KEY, None)
        return saved

    def _check_resumable(self, saved: TrainerState, path: Path) -> None:
        """Refuse a checkpoint written with other settings, model, data or task (:mod:`mmfuse.train.resume`)."""
        task_file = path / ckpt.TASK_NAME
        saved_task = ckpt.read_json_file(task_file, "checkpoint file") if task_file.is_file() else None
        check_resume(
            path, saved, args=self.args, schedule_fields=SCHEDULE_FIELDS, world_size=self.ctx.world_size,
            model_config=self._saved_model_config(), task_info=self.task_info,
            saved_task_info=saved_task, num_samples=self._num_samples(),
        )

    def _prepare_output_dir(self, resume_path: Path | None) -> run_dir.RunDirLock | None:
        """Rank 0: lock the output folder, refuse or clear a used one, remove stale temporaries.
        Errors reach every rank (so none is left waiting in a collective)."""
        lock, error = None, None
        if self.ctx.is_main:
            try:
                lock = run_dir.RunDirLock(self.output_dir).acquire()
                foreign = resume_path is not None and not run_dir.is_inside(resume_path, self.output_dir)
                used = run_dir.used_entries(self.output_dir)
                if used and (resume_path is None or foreign):
                    if not self.args.overwrite_output_dir:
                        what = "start a new run" if resume_path is None else f"resume {str(resume_path)!r}"
                        raise run_dir.OutputDirError(
                            f"training.output_dir: {str(self.output_dir)!r} already holds a run ({', '.join(used)}); "
                            f"refusing to {what} into it and mix the two. Resume it (--resume), choose another "
                            "--output-dir, or pass --overwrite-output-dir to delete the old run"
                        )
                    run_dir.clear_run(self.output_dir)
                ckpt.clean_stale_temporaries(self.output_dir)
                ckpt.clean_stale_temporaries(self.checkpoint_dir)
            except BaseException as exc:
                if lock is not None:
                    lock.release()
                error = exc
        message = broadcast_object(None if error is None else str(error), self.ctx)
        if error is not None:
            raise error
        if message is not None:
            raise run_dir.OutputDirError(str(message))
        return lock

    def _adopt_foreign_checkpoints(self, resume_path: Path) -> None:
        """Resuming ``other/checkpoints/checkpoint-N`` into a new output_dir: copy the best checkpoint
        (and the resumed one) over, so the new folder is complete on its own."""
        if not self.ctx.is_main or run_dir.is_inside(resume_path, self.output_dir):
            return
        import shutil

        names = {resume_path.name, self.state.best_checkpoint}
        for name in sorted(n for n in names if n):
            source, target = resume_path.parent / name, self.checkpoint_dir / name
            if ckpt.is_complete_checkpoint(source) and not target.exists():
                self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
                tmp = self.checkpoint_dir / f".tmp-{name}"
                shutil.copytree(source, tmp)
                tmp.rename(target)
        if self.state.best_checkpoint and not (self.checkpoint_dir / self.state.best_checkpoint).is_dir():
            self.state.best_checkpoint = None  # the best one is gone: the run can still end and export
        ckpt.atomic_write_text(self.checkpoint_dir / ckpt.LATEST_NAME, resume_path.name + "\n")

    def train(self, resume_from_checkpoint: str | Path | bool | None = None) -> TrainOutput:
        """Train; ``resume_from_checkpoint``: True (latest in ``output_dir``), a checkpoint or an output_dir."""
        if self.train_dataset is None:
            raise ValueError("train: the Trainer has no train_dataset")
        if len(self.train_dataset) == 0:  # type: ignore[arg-type]
            raise ValueError("train_dataset: is empty")
        resume_path = self._resolve_resume(resume_from_checkpoint)
        lock = self._prepare_output_dir(resume_path)
        try:
            return self._train(resume_path, lock)
        finally:
            if lock is not None:
                lock.release()

    def _train(self, resume_path: Path | None, lock: run_dir.RunDirLock | None) -> TrainOutput:
        args, ctx = self.args, self.ctx
        seed_everything(args.seed)
        model = _unwrap(self.model)
        model.train()
        self._train_collate = self._collator(train=True)
        batches_per_epoch = self._train_loader(0, 0).batch_sampler.num_batches  # type: ignore[union-attr]
        steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
        total_steps = args.max_steps if args.max_steps is not None else args.num_epochs * steps_per_epoch
        optimizer = build_optimizer(model, args)
        scheduler = build_scheduler(optimizer, args, total_steps)
        scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        state = TrainerState(total_steps=total_steps, world_size=ctx.world_size, args=args.to_dict(),
                             num_samples=self._num_samples())
        if resume_path is not None:
            ckpt.check_not_legacy(resume_path)
            saved = TrainerState.from_dict(ckpt.load_trainer_state(resume_path),
                                           str(resume_path / ckpt.TRAINER_STATE_NAME))
            self._check_resumable(saved, resume_path)
            ckpt.load_training_checkpoint(
                resume_path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, ctx=ctx
            )
            state = dataclasses.replace(saved, args=args.to_dict(), num_samples=self._num_samples())
        self.state = state
        if resume_path is not None:
            self._adopt_foreign_checkpoints(resume_path)
        barrier(ctx)
        for callback in self.callbacks:
            callback.on_train_begin(self, state)
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
        if lock is not None and lock.stale:
            self.logger.log("info", state.global_step, {"event": "stale_lock", "previous_run": lock.stale})
        try:
            with SignalCatcher() as signals:
                self._signals = signals
                self._loop(wrapped, batches_per_epoch)
            metrics = self._finish()
        finally:
            self._signals = None
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
                    if sums is not None:
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
                        if record.get("loss") is not None:
                            progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
                        if self.ctx.is_main and not args.progress_bar:  # no bar: a line per logging window
                            console.log_training(state.global_step, state.total_steps, record,
                                                 time.perf_counter() - loop_start)
                        window_sums, window_rows, window_start = {}, 0, time.perf_counter()
                    self._maybe_evaluate_and_save(epoch_done, last, batches_per_epoch)
                    for callback in self.callbacks:
                        callback.on_step_end(self, state)
                    self._maybe_stop_on_signal()
                    if last or state.stopped_early:
                        break
        finally:
            progress.close()

    def _optimizer_step(
        self, wrapped: nn.Module, micro_batches: list[Any]
    ) -> tuple[dict[str, float] | None, int, float]:
        """Forward/backward every micro-batch, clip, step; return (summed losses, rows, grad norm).

        A non-finite loss or gradient norm is caught before the update (:mod:`mmfuse.train.guards`):
        it raises (``on_nonfinite_loss="stop"``) or skips the update and returns ``None`` sums.
        """
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
            # an fp16 GradScaler skips steps with overflowing gradients itself: only the loss is checked then
            finite = step_is_finite(sums.get("loss"), None if self.scaler.is_enabled() else grad_norm)
            bad = all_reduce_sum(torch.tensor([0.0 if finite else 1.0], dtype=torch.float64), ctx)
            if float(bad[0]) > 0:
                loss = float(sums["loss"]) / max(rows, 1) if "loss" in sums else None
                self._nonfinite_step(loss, grad_norm)
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                return None, rows, grad_norm
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {k: float(v) for k, v in sums.items()}, rows, grad_norm

    def _nonfinite_step(self, loss: float | None, grad_norm: float) -> None:
        """The step being taken (``global_step + 1``) has a non-finite loss or gradient: stop or skip."""
        state, step = self.state, self.state.global_step + 1
        what = (f"the loss is {describe_value(loss)}" if loss is None or not math.isfinite(loss)
                else f"the gradient norm is {describe_value(grad_norm)}")
        if self.args.on_nonfinite_loss == "skip":
            state.nonfinite_steps_skipped += 1
            self.logger.log("info", step, {"event": "nonfinite_step_skipped", "loss": loss,  # type: ignore[union-attr]
                                           "grad_norm": grad_norm})
            return
        last = ckpt.find_latest_checkpoint(self.checkpoint_dir)
        self.logger.log("info", step, {"event": "nonfinite_loss_stop", "loss": loss,  # type: ignore[union-attr]
                                       "grad_norm": grad_norm, "last_checkpoint": str(last) if last else None})
        kept = f"the last good checkpoint is {str(last)!r}" if last else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"train: {what} at step {step} (epoch {state.epoch + 1}); the update was not applied and training "
            f"stopped; {kept}. Lower the learning rate (or check the data), or set on_nonfinite_loss='skip' "
            "(--on-nonfinite-loss skip) to skip such steps",
            step, str(last) if last else None,
        )

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
        if "loss" not in record:  # every step of the window was skipped (non-finite)
            record["loss"] = None
        if state.nonfinite_steps_skipped:
            record["skipped_steps"] = state.nonfinite_steps_skipped
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
        save = save or (args.save_steps is not None and state.global_step % args.save_steps == 0)
        name = ckpt.checkpoint_name(state.global_step)
        if evaluate:
            metrics = self.evaluate(select=True)
            if self.metric_name not in metrics:
                raise ConfigError(
                    f"training.metric_for_best_model: {self.metric_name!r} is not among the evaluation "
                    f"metrics {sorted(metrics)}"
                )
            value = metrics[self.metric_name]
            sign = 1.0 if args.greater_is_better else -1.0
            if not math.isfinite(value):  # a NaN metric never becomes the best
                state.evaluations_without_improvement += 1
            elif state.best_metric is None or sign * (value - state.best_metric) > args.early_stopping_threshold:
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
            self._save_checkpoint()

    def _check_weights_finite(self, purpose: str) -> None:
        bad = nonfinite_parameters(_unwrap(self.model))
        if bad:
            last = ckpt.find_latest_checkpoint(self.checkpoint_dir)
            step = self.state.global_step
            raise NonFiniteLossError(
                f"train: after step {step} {len(bad)} weight tensor(s) hold NaN or infinite values (e.g. {bad[0]!r}); "
                f"not {purpose}. The last good checkpoint is {str(last) if last else None!r}. Lower the learning rate",
                step, str(last) if last else None,
            )

    def _save_checkpoint(self) -> Path:
        """Write ``checkpoint-<step>`` (weights checked first) and rotate old ones."""
        state = self.state
        self._check_weights_finite("writing a checkpoint")
        path = ckpt.save_training_checkpoint(
            self.checkpoint_dir, state.global_step, model=_unwrap(self.model), optimizer=self.optimizer,
            scheduler=self.scheduler, scaler=self.scaler, trainer_state=state.to_dict(),
            task_info=self.task_info, ctx=self.ctx,
        )
        self._saved_step = state.global_step
        if self.ctx.is_main:
            ckpt.rotate_checkpoints(self.checkpoint_dir, self.args.save_total_limit, protect=state.best_checkpoint)
        return path

    def _maybe_stop_on_signal(self) -> None:
        """After a step: if SIGINT / SIGTERM arrived (on any rank), checkpoint this step and stop."""
        import signal

        signals = getattr(self, "_signals", None)
        received = signals.received if signals is not None else None
        if self.ctx.distributed:  # every rank stops at the same step
            local = [float(received == signal.SIGINT), float(received == signal.SIGTERM)]
            flags = all_reduce_sum(torch.tensor(local, dtype=torch.float64), self.ctx)
            if received is None and float(flags.sum()) > 0:
                received = signal.SIGINT if float(flags[0]) > 0 else signal.SIGTERM
        if not received:
            return
        path = self.checkpoint_dir / ckpt.checkpoint_name(self.state.global_step)
        if self._saved_step != self.state.global_step:
            path = self._save_checkpoint()
        self.logger.log("info", self.state.global_step, {"event": "interrupted",  # type: ignore[union-attr]
                                                         "signal": int(received), "checkpoint": str(path)})
        raise TrainingInterrupted(int(received), self.state.global_step, path)

    def _finish(self) -> dict[str, float]:
        """Load the best checkpoint's weights if asked, export ``output_dir/model``, summarise."""
        args, ctx, state = self.args, self.ctx, self.state
        model = _unwrap(self.model)
        if args.load_best_model_at_end and state.best_checkpoint is not None:
            load_weights(model, self.checkpoint_dir / state.best_checkpoint / ckpt.WEIGHTS_NAME, ctx.device)
        self._check_weights_finite("exporting the model")
        metrics: dict[str, float] = {}
        if self.eval_dataset is not None and args.eval_strategy != "no":
            metrics = self.evaluate(select=True)
            self.logger.log("final", state.global_step, {"checkpoint": state.best_checkpoint if args.load_best_model_at_end  # type: ignore[union-attr]
                                                         else None, **metrics})
            if ctx.is_main:
                console.log_final(state.best_checkpoint if args.load_best_model_at_end else None, metrics)
        if "loss" in metrics and not math.isfinite(metrics["loss"]):
            last = state.best_checkpoint if args.load_best_model_at_end else None
            raise NonFiniteLossError(
                f"train: the final model's evaluation loss is {describe_value(metrics['loss'])} (checkpoint {last!r}); "
                "not exporting it to model/. The run diverged: lower the learning rate",
                state.global_step, last,
            )
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
            # None: tqdm shows the bar only on a terminal, so redirected stderr keeps just messages
            disable=True if not (self.ctx.is_main and self.args.progress_bar) else None,
        )
