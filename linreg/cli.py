"""``linreg`` command line: ``linreg train`` runs seed 000's problem by default."""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from linreg import datasets, distributed
from linreg.backends import BACKENDS
from linreg.cuda_backend import CudaUnavailableError
from linreg.estimator import INITS, DivergenceError, LinearRegressor
from linreg.inference import COV_TYPES
from linreg.report import add_report_parser
from linreg.training import OPTIMIZERS, SCHEDULES, SOLVERS


class CliError(Exception):
    """A user error on the command line: printed without a traceback, exit code 2."""


def _parse_columns(spec: str | None, names: list[str] | None, n_columns: int) -> list[int]:
    """Target columns from "-1", "2,3" or header names "price,volume"; default: the last column."""
    if spec is None:
        return [n_columns - 1]
    columns = []
    for token in spec.split(","):
        token = token.strip()
        if names is not None and token in names:
            columns.append(names.index(token))
            continue
        try:
            index = int(token)
        except ValueError:
            known = f"; columns are {', '.join(names)}" if names else ""
            raise CliError(f"--target {token!r} is neither a column index nor a column name{known}") from None
        if not -n_columns <= index < n_columns:
            raise CliError(f"--target column {index} is out of range for {n_columns} columns")
        columns.append(index % n_columns)
    if len(set(columns)) != len(columns) or len(columns) >= n_columns:
        raise CliError(f"--target must name distinct columns and leave at least one feature, got {spec!r}")
    return columns


def _split(table: np.ndarray, spec: str | None, names: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
    if table.ndim != 2 or table.shape[1] < 2:
        raise CliError(f"a data file must hold a 2-D table of at least 2 columns, got shape {table.shape}")
    targets = _parse_columns(spec, names, table.shape[1])
    features = [c for c in range(table.shape[1]) if c not in targets]
    y = table[:, targets]
    return table[:, features], (y[:, 0] if len(targets) == 1 else y)


def load_dataset(name: str, *, target: str | None, n_samples: int, seed: int | None):
    """Return ``(X, y, truth)``; truth is ``(coef, bias)`` when known, else None."""
    if name == "seed-linear":
        X, y = datasets.seed_linear(n_samples=n_samples, random_state=seed)
        return X, y, (np.array(datasets.SEED_COEF), datasets.SEED_BIAS)
    if name == "crops":
        X, y = datasets.crops()
        return X, y, None
    path = Path(name)
    if not path.exists():
        raise CliError(f"--dataset must be seed-linear, crops or an existing .npy/.npz/.csv file; got {name!r}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return (*_split(np.load(path, allow_pickle=False), target, None), None)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if "X" in keys and "y" in keys:
                    return archive["X"], archive["y"], None
                if len(keys) == 1:
                    return (*_split(archive[keys[0]], target, None), None)
            raise CliError(f"{path} must hold arrays 'X' and 'y', or a single table; it holds {keys}")
        if suffix == ".csv":
            with path.open(newline="") as handle:
                header = next(csv.reader(handle), None)
            if not header:
                raise CliError(f"{path} is empty")
            has_names = any(not _is_number(cell) for cell in header)
            table = np.loadtxt(path, delimiter=",", skiprows=1 if has_names else 0, ndmin=2)
            names = [cell.strip() for cell in header] if has_names else None
            return (*_split(table, target, names), None)
    except (OSError, ValueError) as error:
        raise CliError(f"cannot read {path}: {error}") from None
    raise CliError(f"unsupported data file {path}: expected .npy, .npz or .csv")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def result_table(runs: list[tuple[str, LinearRegressor, float]], truth) -> str:
    """One column per run: learned weights and bias (next to the truth when known), final loss, wall time."""
    width = max(24, *(len(label) + 2 for label, _, _ in runs))
    rows = []
    if truth is not None:
        true_coef, true_bias = truth
        rows.append(f"{'':10}{'true':>8}" + "".join(f"{label:>{width}}" for label, _, _ in runs))
        names = [f"w[{f}]" for f in range(len(true_coef))] + ["bias"]
        truths = list(true_coef) + [true_bias]
        learned = [np.append(np.atleast_2d(m.coef_)[0], np.atleast_1d(m.intercept_)[0]) for _, m, _ in runs]
        for k, (name, true) in enumerate(zip(names, truths, strict=True)):
            cells = "".join(f"{values[k]:>{width}.6f}" for values in learned)
            rows.append(f"{name:10}{true:>8g}{cells}")
        rows.append(f"{'max error':18}" + "".join(
            f"{np.abs(values - truths).max():>{width}.2e}" for values in learned))
    else:
        for label, model, _ in runs:
            coef, intercept = np.atleast_2d(model.coef_), np.atleast_1d(model.intercept_)
            rows.append(label)
            for o in range(coef.shape[0]):
                weights = " ".join(f"{value:12.6f}" for value in coef[o])
                rows.append(f"  output {o}:  w = [{weights} ]  b = {intercept[o]:.6f}")
    lead = 18 if truth is not None else 0
    rows.append(f"{'final loss':{lead}}" + "".join(f"{m.loss_history_[-1]:>{width}.6g}" for _, m, _ in runs))
    rows.append(f"{'epochs run':{lead}}" + "".join(f"{f'{m.n_iter_} ({m.stop_reason_})':>{width}}" for _, m, _ in runs))
    rows.append(f"{'learning rate':{lead}}" + "".join(
        f"{m.lr_:>{width}.4g}" if m.lr_ is not None else f"{'-':>{width}}" for _, m, _ in runs))
    rows.append(f"{'wall time (s)':{lead}}" + "".join(f"{seconds:>{width}.3f}" for _, _, seconds in runs))
    backend = runs[0][1].backend
    rows.append(f"backend {backend!r}{_threads(backend)}; final loss is the last epoch's, before its update")
    return "\n".join(rows)


def print_summaries(runs: list[tuple[str, LinearRegressor, float]], X, y, cov_type: str, **data: Any) -> None:
    """``--summary``: the inference summary of each run, or why there is none (e.g. a fit that has not converged).

    ``data``: sample_weight and, for streamed runs, the distributed/out-of-core keywords of ``inference.compute``.
    """
    from linreg import inference

    for label, model, _ in runs:
        print(f"\ninference summary of {label!r} (cov_type={cov_type}):")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                print(inference.compute(model, X, y, cov_type=cov_type, **data).summary())
        except ValueError as error:  # refusals: not converged, a penalty, early stopping
            print(f"  not available: {error}")


def _threads(backend: str) -> str:
    if backend != "cpu":
        return ""
    import numba

    from kernels import cpu

    return f" ({numba.get_num_threads()} threads, {cpu.threading_layer()} threading layer)"


def plot_loss(curves: list[tuple[str, np.ndarray]], path: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CliError("--plot needs matplotlib: pip install 'numba-linreg[plot]'") from None
    figure, axes = plt.subplots(figsize=(6, 4))
    # A loss of exactly 0 (an exact fit) cannot sit on a log axis: draw it at float64's resolution
    # relative to the largest loss, below which the values carry no information anyway.
    floor = max(float(np.max(history)) for _, history in curves) * np.finfo(np.float64).eps
    for label, history in curves:
        axes.semilogy(np.arange(len(history)), np.maximum(history, floor), label=label)
    axes.set(xlabel="epoch", ylabel="loss (before the update)", title=title)
    if len(curves) > 1:
        axes.legend()
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _estimator_params(args: argparse.Namespace) -> dict:
    params = {name: getattr(args, name) for name in ESTIMATOR_FLAGS}
    params["betas"] = tuple(params["betas"])
    params["lr"] = args.lr
    params["random_state"] = args.seed
    params["progress"] = not args.no_progress
    params["checkpoint_path"] = args.checkpoint
    params["checkpoint_every"] = args.checkpoint_every
    return params


class Interrupted(Exception):
    """Ctrl-C during a fit; carries the model, which holds the last completed epoch."""

    def __init__(self, model: LinearRegressor, message: str) -> None:
        super().__init__(message)
        self.model = model


def _fit(params: dict, X, y, resume: bool = False) -> tuple[LinearRegressor, float]:
    model = LinearRegressor(**params)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            model.fit(X, y, resume=resume)
    except KeyboardInterrupt as interrupt:
        if not hasattr(model, "coef_"):
            raise
        raise Interrupted(model, str(interrupt)) from None
    except (ValueError, TypeError, CudaUnavailableError) as error:
        if isinstance(error, DivergenceError):
            raise
        raise CliError(str(error)) from None
    return model, time.perf_counter() - start


#: The improved run of the default demo: the curvature-scaled step on standardised features.
IMPROVED = {"standardize": True, "lr": "auto", "epochs": 100}


def _check_output_paths(args: argparse.Namespace) -> None:
    """Fail before training, not after it, when an output cannot be written."""
    import os

    for flag in ("save", "plot", "checkpoint"):
        path = getattr(args, flag, None)
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
                raise CliError(f"--{flag} {path}: the folder {folder} does not exist or is not writable")


def _train(args: argparse.Namespace) -> int:
    _check_output_paths(args)
    if args.distributed or args.target_file is not None:  # stream .npy files (out of core / data-parallel)
        return distributed.run_from_cli(args)
    X, y, truth = load_dataset(args.dataset, target=args.target, n_samples=args.n_samples, seed=args.seed)
    params = _estimator_params(args)
    print(f"dataset {args.dataset}: X {X.shape} {X.dtype}, y {np.shape(y)}; {args.epochs} epochs, "
          f"solver={args.solver}, lr={args.lr}, init={args.init}", flush=True)
    runs = []
    try:
        model, seconds = _fit(params, X, y, resume=args.resume)
        label = "this run"
        compare = (truth is not None and not args.no_compare and not args.standardize and args.lr != "auto"
                   and args.checkpoint is None)
        if compare:
            label = f"lr={args.lr:g}, {args.epochs} epochs"
        runs.append((label, model, seconds))
        if compare:
            improved, seconds = _fit({**params, **IMPROVED}, X, y)
            runs.append(("standardize, lr=auto, 100 ep", improved, seconds))
    except DivergenceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Interrupted as interrupt:
        print(f"interrupted: {interrupt}", file=sys.stderr)
        if args.save:
            interrupt.model.save(args.save)
            print(f"model of the last completed epoch written to {args.save}", file=sys.stderr)
        if args.checkpoint:
            print(f"continue with the same command and --resume (checkpoint {args.checkpoint})", file=sys.stderr)
        return 130
    print(result_table(runs, truth))
    if args.summary:
        print_summaries(runs, X, y, args.summary)
    if args.plot:
        plot_loss([(label, m.loss_history_) for label, m, _ in runs], Path(args.plot), f"{args.dataset}")
        print(f"loss curve written to {args.plot}")
    if args.save:
        model.save(args.save)
        print(f"model written to {args.save}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _lr(text: str) -> float | str:
    return "auto" if text == "auto" else _positive_float(text)


def _penalty(text: str) -> str | None:
    if text == "none":
        return None
    if text not in ("l2", "l1", "elasticnet"):
        raise argparse.ArgumentTypeError(f"must be l2, l1, elasticnet or none, got {text}")
    return text


def add_estimator_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per LinearRegressor option (same names, dashes for underscores); values are checked by fit."""
    group = parser.add_argument_group("training options (LinearRegressor's keyword arguments)")
    add = group.add_argument
    add("--epochs", type=_positive_int, default=500, help="default 500 (seed 000)")
    add("--lr", type=_lr, default=1e-5, help="learning rate, or 'auto' (1/L from the loss curvature); "
                                             "default 1e-5 (seed 000)")
    add("--solver", choices=SOLVERS, default="gd", help="gd (streaming GD), normal (exact), gram (GD on X^T X)")
    add("--batch-size", type=_positive_int, default=None, help="mini-batch size (default: full batch)")
    add("--no-shuffle", dest="shuffle", action="store_false", help="keep the row order in every epoch")
    add("--optimizer", choices=OPTIMIZERS, default="sgd")
    add("--momentum", type=float, default=0.0)
    add("--dampening", type=float, default=0.0)
    add("--nesterov", action="store_true")
    add("--weight-decay", type=float, default=None, help="torch's; default 0 (0.01 for adamw)")
    add("--betas", type=float, nargs=2, default=(0.9, 0.999), metavar=("BETA1", "BETA2"))
    add("--eps", type=float, default=1e-8)
    add("--amsgrad", action="store_true")
    add("--penalty", type=_penalty, default=None, help="l2, l1, elasticnet or none (default)")
    add("--alpha", type=float, default=1e-4, help="penalty strength (default 1e-4)")
    add("--l1-ratio", type=float, default=0.15)
    add("--schedule", choices=SCHEDULES, default="constant")
    add("--power-t", type=float, default=0.25, help="invscaling's exponent")
    add("--gamma", type=float, default=0.1, help="step/exponential factor")
    add("--step-size", type=_positive_int, default=30, help="epochs between step decays")
    add("--t-max", type=_positive_int, default=None, help="cosine period (default: epochs)")
    add("--eta-min", type=float, default=0.0, help="cosine floor")
    add("--tol", type=float, default=None, help="stop when the loss improves by less than this")
    add("--n-iter-no-change", type=_positive_int, default=5)
    add("--early-stopping", action="store_true", help="stop on a held-out validation loss")
    add("--validation-fraction", type=float, default=0.1)
    add("--standardize", action="store_true", help="fit on standardised features (coef in original units)")
    add("--init", choices=INITS, default="ones", help="initial parameters (default ones, seed 000)")
    add("--backend", choices=tuple(BACKENDS), default="cpu")


#: The estimator parameters set from flags of the same name.
ESTIMATOR_FLAGS = ("epochs", "solver", "batch_size", "shuffle", "optimizer", "momentum", "dampening", "nesterov",
                   "weight_decay", "betas", "eps", "amsgrad", "penalty", "alpha", "l1_ratio", "schedule", "power_t",
                   "gamma", "step_size", "t_max", "eta_min", "tol", "n_iter_no_change", "early_stopping",
                   "validation_fraction", "standardize", "init", "backend")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linreg", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a linear model (default: seed 000's problem and settings)",
                                description="Train a linear model. With no arguments: seed 000's problem and "
                                            "settings, then the improved run (standardize, lr=auto) beside it.")
    train.add_argument("--dataset", default="seed-linear",
                       help="seed-linear (seed 000), crops (seed 003), or a .npy/.npz/.csv file")
    train.add_argument("--target", help="target column(s) of a data file: indices or CSV header names, "
                                        "comma-separated (default: the last column)")
    train.add_argument("--n-samples", type=_positive_int, default=5000, help="rows of seed-linear (default 5000)")
    train.add_argument("--seed", type=int, default=0,
                       help="random seed of the data, init=randn, the shuffle and the validation split (default 0)")
    train.add_argument("--plot", metavar="PNG", help="write the loss curve(s) to this file")
    train.add_argument("--save", metavar="NPZ", help="write the fitted model to this file (linreg.load reads it)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--no-compare", action="store_true",
                       help="on seed-linear, skip the improved run shown beside the configured one")
    train.add_argument("--checkpoint", metavar="NPZ",
                       help="write the run's whole state here (atomically) every --checkpoint-every epochs, "
                            "on Ctrl-C and at the end")
    train.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="N")
    train.add_argument("--resume", action="store_true",
                       help="continue from --checkpoint (same data and options; the result equals an "
                            "uninterrupted run)")
    train.add_argument("--summary", nargs="?", const="nonrobust", choices=COV_TYPES, metavar="COV_TYPE",
                       help="after the fit, print the inference summary (standard errors, t, p, intervals) of each "
                            f"run; COV_TYPE one of {', '.join(COV_TYPES)} (default nonrobust). Inference refuses "
                            "fits that have not converged (it says why): solver=normal is exact")
    add_estimator_flags(train)
    distributed.add_cli_arguments(train)
    train.set_defaults(handler=_train)
    add_report_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except CliError as error:
        parser.exit(2, f"linreg: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
