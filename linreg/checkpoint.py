"""Training checkpoints: the whole state of a run, written atomically, resumed bit-exactly.

A checkpoint is an ``.npz`` (read with ``allow_pickle=False``) holding the run's
state arrays (parameters, optimiser buffers, counters, histories) and a JSON
``meta``: the format version, the hyper-parameters that shape the trajectory,
the seed in use (so a ``random_state=None`` fit resumes with its own shuffle),
the learning rate in use, and a fingerprint of the data. Resuming checks that
the hyper-parameters and the data are the ones the checkpoint was made with.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from linreg.options import RESUMABLE
from linreg.persistence import ModelFileError, atomic_savez, to_json

FORMAT = "linreg-checkpoint"
FORMAT_VERSION = 1
#: Parameters that may differ between the interrupted fit and its resumption.
FREE_PARAMS = RESUMABLE


def fingerprint(X: np.ndarray, Y: np.ndarray, weights: np.ndarray | None, *, rows_of=None) -> str:
    """Shape, dtype and a hash of up to 1024 evenly spaced rows (and all weights): catches the wrong data cheaply.

    ``rows_of(array, rows)``: those rows as a host array, for data held elsewhere (GPU arrays:
    ``kernels.cuda.rows_to_host``); the same numbers give the same fingerprint wherever they are."""
    digest = hashlib.blake2b(digest_size=16)
    rows = np.unique(np.linspace(0, X.shape[0] - 1, min(X.shape[0], 1024)).astype(np.int64))
    for array in (X, Y):
        digest.update(f"{tuple(array.shape)}{np.dtype(array.dtype)}".encode())
        digest.update(np.ascontiguousarray(array[rows] if rows_of is None else rows_of(array, rows)).tobytes())
    if weights is not None:
        digest.update(np.ascontiguousarray(weights).tobytes())
    return digest.hexdigest()


def _comparable(params: dict[str, Any]) -> dict[str, Any]:
    free = set(FREE_PARAMS)
    if params.get("schedule") == "cosine" and params.get("t_max") is None:
        free.discard("epochs")  # the cosine period is the epoch budget: it shapes the whole trajectory
    out = {}
    for key, value in params.items():
        if key in free:
            continue
        if key == "init" and not isinstance(value, str):
            value = "explicit"
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def save(path: str | os.PathLike, *, params: dict[str, Any], state: dict[str, np.ndarray], seed: int, lr: float,
         data: str, n_done: int) -> None:
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "params": _comparable(params), "seed": seed,
            "lr": lr, "data": data, "n_done": n_done}
    atomic_savez(path, {**{f"state_{key}": value for key, value in state.items()},
                        "meta": np.array(to_json(meta))})


def load(path: str | os.PathLike, *, params: dict[str, Any], data: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, state) of the checkpoint at ``path``, after checking it belongs to this fit."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        meta = json.loads(str(arrays.pop("meta")))
    except FileNotFoundError:
        raise
    except Exception as error:  # any damage: truncated zip, missing or corrupt metadata
        raise ModelFileError(f"{path} is not a readable linreg checkpoint: {error}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a linreg checkpoint")
    if not isinstance(meta.get("format_version"), int) or meta["format_version"] > FORMAT_VERSION:
        raise ModelFileError(f"{path} has checkpoint format {meta.get('format_version')}; this linreg reads "
                             f"<= {FORMAT_VERSION}: upgrade linreg")
    expected = json.loads(to_json(_comparable(params)))
    if meta.get("params") != expected:
        changed = sorted(k for k in set(expected) | set(meta.get("params", {}))
                         if expected.get(k) != meta.get("params", {}).get(k))
        raise ValueError(f"cannot resume from {path}: it was made with different hyper-parameters "
                         f"({', '.join(changed)})")
    if meta.get("data") != data:
        raise ValueError(f"cannot resume from {path}: it was made on different data (shape, dtype or values differ)")
    state = {key.removeprefix("state_"): value for key, value in arrays.items()}
    return meta, state
