"""Save and load fitted models as ``.npz`` files that load without unpickling.

Layout (format version 1): arrays ``coef``, ``intercept``, ``loss_history``
(and ``init_W``, ``init_b`` when init was explicit), plus ``meta``: a 0-d
unicode array holding JSON with the format version, the library version, the
hyper-parameters and the fitted scalars. ``np.load(..., allow_pickle=False)``
reads it; a round trip is bit-exact.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "linreg-model"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """The file is not a linreg model this version can read."""


def save(model, path: str | os.PathLike) -> None:
    from linreg import __version__

    state = model.fitted_state()
    params = model.get_params()
    arrays: dict[str, np.ndarray] = {
        "coef": state.coef[0] if state.one_output else state.coef,
        "intercept": state.intercept[0] if state.one_output else state.intercept,
        "loss_history": np.asarray(state.loss_history),
    }
    if not isinstance(params["init"], str):
        arrays["init_W"], arrays["init_b"] = (np.asarray(a) for a in params["init"])
        params["init"] = "explicit"
    params["betas"] = list(params["betas"])
    names = state.feature_names
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__,
        "params": params, "n_iter": state.n_iter, "n_features_in": state.n_features,
        "one_output": bool(state.one_output), "stop_reason": state.stop_reason, "lr_used": state.lr,
        "feature_names": None if names is None else [str(n) for n in names],
    }
    arrays["meta"] = np.array(to_json(meta))
    atomic_savez(path, arrays)


def to_json(value: Any) -> str:
    """json.dumps that also takes NumPy scalars (GridSearchCV passes np.int64 hyper-parameters)."""
    def plain(item):
        if isinstance(item, np.generic):
            return item.item()
        raise TypeError(f"cannot store {type(item).__name__} in a model file")

    return json.dumps(value, default=plain)


def atomic_savez(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """np.savez to a temporary file in the same directory, then rename: a reader never sees half a file."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike):
    """Read a model written by ``LinearRegressor.save``; raise ModelFileError if it is not one."""
    from linreg.driver import FittedState
    from linreg.estimator import LinearRegressor

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ModelFileError(f"{path} is not a readable linreg model file (.npz): {error}") from None
    meta = _meta(arrays, path)
    if not isinstance(meta["params"], dict):
        raise ModelFileError(f"{path}: hyper-parameters must be a mapping, got {type(meta['params']).__name__}")
    params: dict[str, Any] = dict(meta["params"])
    if params.get("init") == "explicit":
        if "init_W" not in arrays or "init_b" not in arrays:
            raise ModelFileError(f"{path}: init is 'explicit' but init_W / init_b are missing")
        params["init"] = (arrays["init_W"], arrays["init_b"])
    if isinstance(params.get("betas"), list):
        params["betas"] = tuple(params["betas"])
    try:
        model = LinearRegressor(**params)
    except TypeError as error:
        raise ModelFileError(f"{path}: unknown hyper-parameters in the file: {error}") from None
    coef, intercept = arrays.get("coef"), arrays.get("intercept")
    if coef is None or intercept is None or "loss_history" not in arrays:
        raise ModelFileError(f"{path} lacks coef, intercept or loss_history")
    n_features = int(meta["n_features_in"])
    one_output = bool(meta["one_output"])
    expected_ndim = 1 if one_output else 2
    if coef.ndim != expected_ndim or coef.shape[-1] != n_features or coef.dtype.kind != "f":
        raise ModelFileError(f"{path}: coef has shape {coef.shape} / dtype {coef.dtype}, inconsistent with "
                             f"{n_features} features")
    n_outputs = 1 if one_output else coef.shape[0]
    if np.shape(intercept) != (() if one_output else (n_outputs,)):
        raise ModelFileError(f"{path}: intercept has shape {np.shape(intercept)}, expected {n_outputs} outputs")
    names = meta.get("feature_names")
    state = FittedState(
        coef=coef.reshape(n_outputs, n_features), intercept=np.asarray(intercept).reshape(n_outputs),
        loss_history=arrays["loss_history"], n_iter=int(meta["n_iter"]), stop_reason=meta["stop_reason"],
        lr=None if meta["lr_used"] is None else float(meta["lr_used"]), one_output=one_output,
        backend="cpu" if model.backend not in ("cpu", "torch") else model.backend,
        feature_names=None if names is None else np.asarray(names, dtype=object))
    return model.load_fitted_state(state)


def _meta(arrays: dict[str, np.ndarray], path: Path) -> dict[str, Any]:
    raw = arrays.get("meta")
    if raw is None or raw.dtype.kind != "U" or raw.ndim != 0:
        raise ModelFileError(f"{path} is not a linreg model file: no metadata")
    try:
        meta = json.loads(str(raw))
    except json.JSONDecodeError as error:
        raise ModelFileError(f"{path}: corrupt metadata: {error}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a linreg model file (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(f"{path} was written in model format version {version} (library "
                             f"{meta.get('library_version')}); this linreg reads format <= {FORMAT_VERSION}: "
                             "upgrade linreg")
    missing = {"params", "n_iter", "n_features_in", "one_output", "stop_reason", "lr_used"} - set(meta)
    if missing:
        raise ModelFileError(f"{path}: metadata lacks {sorted(missing)}")
    return meta
