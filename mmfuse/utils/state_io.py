"""Saving nested state (optimizer / scheduler / RNG states) without pickle.

``torch.save`` / ``torch.load`` use pickle, and unpickling a file runs whatever code the file
names: a checkpoint folder from someone else could take over the machine on ``--resume``. mmfuse
therefore never unpickles. A state — nested dicts, lists and tuples of tensors, NumPy arrays,
numbers, strings, booleans and ``None`` — is stored as one ``.safetensors`` file: the tensors as
safetensors tensors, the structure as JSON in the file's metadata (key ``mmfuse_state``).
Reading it parses JSON and raw tensor bytes only.

Encoding of the structure (every container is tagged, so user keys can never be mistaken for tags):
``{"__map__": [[key, value], ...]}`` (keys: str / int / float / bool / None), ``{"__list__": [...]}``,
``{"__tuple__": [...]}``, ``{"__tensor__": name}``, ``{"__ndarray__": name, "dtype": "uint32"}``,
``{"__float__": "nan" | "inf" | "-inf"}``; other numbers, strings, booleans and ``None`` as JSON.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfuse.utils.io import atomic_write_with

FORMAT = "mmfuse-state-1"
_KEY = "mmfuse_state"


class StateFileError(ValueError):
    """A state file that is missing, truncated, corrupt or not an mmfuse state file."""


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().to("cpu").contiguous().clone()
        return {"__tensor__": name}
    if isinstance(value, np.ndarray):
        name = f"t{len(tensors)}"
        array = value.astype(np.int64) if value.dtype.kind in "ui" else value
        tensors[name] = torch.from_numpy(np.ascontiguousarray(array)).clone()
        return {"__ndarray__": name, "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return _encode(value.item(), tensors)
    if isinstance(value, dict):
        pairs = []
        for key, item in value.items():
            if not (key is None or isinstance(key, (str, int, float, bool))):
                raise TypeError(f"state: cannot store a dict key of type {type(key).__name__}")
            pairs.append([key, _encode(item, tensors)])
        return {"__map__": pairs}
    if isinstance(value, list):
        return {"__list__": [_encode(v, tensors) for v in value]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in value]}
    raise TypeError(f"state: cannot store a value of type {type(value).__name__} without pickle")


def _decode(value: Any, tensors: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if isinstance(value, dict) and len(value) in (1, 2):
        if "__map__" in value:
            return {k: _decode(v, tensors, where) for k, v in value["__map__"]}
        if "__list__" in value:
            return [_decode(v, tensors, where) for v in value["__list__"]]
        if "__tuple__" in value:
            return tuple(_decode(v, tensors, where) for v in value["__tuple__"])
        if "__tensor__" in value:
            return tensors.get_tensor(str(value["__tensor__"]))
        if "__ndarray__" in value:
            array = tensors.get_tensor(str(value["__ndarray__"])).numpy()
            return array.astype(np.dtype(str(value.get("dtype", array.dtype))))
        if "__float__" in value and value["__float__"] in ("nan", "inf", "-inf"):
            return float(value["__float__"])
    raise StateFileError(f"{where}: corrupt state structure near {str(value)[:60]!r}")


def save_state(path: str | os.PathLike[str], state: Any) -> Path:
    """Write ``state`` to ``path`` (one ``.safetensors`` file, atomically); no pickle involved."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(state, tensors)
    metadata = {"format": FORMAT, _KEY: json.dumps(structure, allow_nan=False)}
    atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return Path(path)


def load_state(path: str | os.PathLike[str]) -> Any:
    """Read a state written by :func:`save_state`; :class:`StateFileError` naming the file when it
    is missing, truncated, corrupt or of another kind."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"state file {str(p)!r} does not exist")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as tensors:
            metadata = tensors.metadata() or {}
            if metadata.get("format") != FORMAT or _KEY not in metadata:
                raise StateFileError(f"{p}: not an mmfuse state file (no {_KEY!r} metadata)")
            try:
                structure = json.loads(metadata[_KEY])
            except json.JSONDecodeError as exc:
                raise StateFileError(f"{p}: corrupt state metadata ({exc.msg})") from None
            return _decode(structure, tensors, str(p))
    except SafetensorError as exc:
        raise StateFileError(f"{p}: not a readable safetensors file (truncated or corrupt): {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError, RecursionError) as exc:
        if isinstance(exc, StateFileError):
            raise
        raise StateFileError(f"{p}: corrupt state file: {type(exc).__name__}: {str(exc)[:200]}") from None
