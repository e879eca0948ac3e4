"""``linreg`` command line: ``linreg train`` runs seed 000's problem by default."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from linreg import compilation, datasets, distributed, options, outofcore, parquet
from linreg.cuda_backend import CudaUnavailableError
from linreg.estimator import DivergenceError, LinearRegressor
from linreg.inference import COV_TYPES


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


#: The result table lists at most this many weights of an output (sparse data has 10^5 features).
MAX_WEIGHTS_SHOWN = 20


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
            shown = coef.shape[1] if coef.shape[1] <= MAX_WEIGHTS_SHOWN else MAX_WEIGHTS_SHOWN - 1
            more = f" ... ({coef.shape[1] - shown} more)" if shown < coef.shape[1] else ""
            for o in range(coef.shape[0]):
                weights = " ".join(f"{value:12.6f}" for value in coef[o, :shown])
                rows.append(f"  output {o}:  w = [{weights}{more} ]  b = {intercept[o]:.6f}")
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

    from linreg.kernels import cpu

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
    return options.params_from_flags(args, random_state=args.seed, progress=not args.no_progress,
                                     checkpoint_path=args.checkpoint, checkpoint_every=args.checkpoint_every)


class Interrupted(Exception):
    """Ctrl-C during a fit; carries the model, which holds the last completed epoch (None: nothing was trained)."""

    def __init__(self, model: LinearRegressor | None, message: str) -> None:
        super().__init__(message)
        self.model = model


def _announce_compile(what: str) -> None:
    print(f"compiling kernels for {what} (first run only, cached in {compilation.cache_location()}) ...",
          end="", flush=True)


def _prepare(model: LinearRegressor, X, y, sample_weight=None) -> None:
    """Compile (or load) the fit's kernels before it is timed: the screen shows compile time on its own line."""
    preparation = compilation.prepare_fit(model, X, y, sample_weight, on_compile=_announce_compile)
    if preparation.compiled:
        print(f" {preparation.seconds:.1f} s", flush=True)
    elif preparation.seconds >= 0.05:  # a cache load worth mentioning (not kernels already in memory)
        print(preparation.message(), flush=True)


def _fit(params: dict, X, y, resume: bool = False, sample_weight=None) -> tuple[LinearRegressor, float]:
    model = LinearRegressor(**params)
    try:
        _prepare(model, X, y, sample_weight)
        start = time.perf_counter()  # training only: the compile time is on its own line
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            model.fit(X, y, sample_weight=sample_weight, resume=resume)
    except KeyboardInterrupt as interrupt:
        if not hasattr(model, "coef_"):
            raise Interrupted(None, str(interrupt) or "before the first epoch: nothing was trained") from None
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


def _sparse_dataset(args: argparse.Namespace):
    """(X, y, sample_weight) of ``--dataset X.npz`` written by ``scipy.sparse.save_npz``: trained in memory, sparse."""
    from linreg import sparse

    if args.distributed or args.target is not None:
        raise CliError(f"--dataset {args.dataset} is a sparse matrix: it trains in memory on one process, with "
                       "its targets from --target-file y.npy (no --target column, no --distributed)")
    try:
        return sparse.load_file(args.dataset, args.target_file, args.weight_file)
    except ValueError as error:
        raise CliError(str(error)) from None


def _train(args: argparse.Namespace) -> int:
    _check_output_paths(args)
    from linreg import sparse

    sample_weight = None
    if sparse.is_sparse_file(args.dataset):  # scipy.sparse.save_npz: in memory, never densified
        (X, y, sample_weight), truth = _sparse_dataset(args), None
    # Stream .npy files or a Parquet dataset (out of core / data-parallel).
    elif args.distributed or args.target_file is not None or parquet.is_parquet(args.dataset):
        return run_streaming(args)
    else:
        X, y, truth = load_dataset(args.dataset, target=args.target, n_samples=args.n_samples, seed=args.seed)
    params = _estimator_params(args)
    if args.dataset == "seed-linear":  # the demo reproduces seed 000: its step and raw features unless asked
        seed = datasets.SEED_000_SETTINGS
        params.update(lr=seed["lr"] if args.lr is None else args.lr,
                      standardize=seed["standardize"] if args.standardize is None else args.standardize)
    print(f"dataset {args.dataset}: X {X.shape} {X.dtype}, y {np.shape(y)}; {args.epochs} epochs, "
          f"solver={args.solver}, lr={params['lr'] if params['lr'] is not None else 'default (auto)'}, "
          f"init={args.init}", flush=True)
    runs = []
    try:
        model, seconds = _fit(params, X, y, resume=args.resume, sample_weight=sample_weight)
        label = "this run"
        compare = (truth is not None and not args.no_compare and not params["standardize"]
                   and params["lr"] not in ("auto", None) and args.checkpoint is None)
        if compare:
            label = f"lr={params['lr']:g}, {args.epochs} epochs"
        runs.append((label, model, seconds))
        if compare:
            improved, seconds = _fit({**params, **IMPROVED}, X, y)
            runs.append(("standardize, lr=auto, 100 ep", improved, seconds))
    except DivergenceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Interrupted as interrupt:
        print(f"interrupted: {interrupt}", file=sys.stderr)
        if args.save and interrupt.model is not None:
            interrupt.model.save(args.save)
            print(f"model of the last completed epoch written to {args.save}", file=sys.stderr)
        if args.checkpoint:
            print(f"continue with the same command and --resume (checkpoint {args.checkpoint})", file=sys.stderr)
        return 130
    print(result_table(runs, truth))
    if args.summary:
        print_summaries(runs, X, y, args.summary, sample_weight=sample_weight)
    if args.plot:
        plot_loss([(label, m.loss_history_) for label, m, _ in runs], Path(args.plot), f"{args.dataset}")
        print(f"loss curve written to {args.plot}")
    if args.save:
        model.save(args.save)
        print(f"model written to {args.save}")
    return 0


def _compile(args: argparse.Namespace) -> int:
    return compilation.run(args, out=lambda line: print(line, flush=True))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linreg", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a linear model (default: seed 000's problem and settings)",
                                description="Train a linear model. With no arguments: seed 000's problem and "
                                            "settings, then the improved run (standardize, lr=auto) beside it.")
    train.add_argument("--dataset", default="seed-linear",
                       help="seed-linear (seed 000), crops (seed 003), a .npy/.npz/.csv file, Parquet data "
                            "(a .parquet file or a directory of them: streamed, see --target), or a sparse "
                            "matrix saved by scipy.sparse.save_npz (in memory, with --target-file)")
    train.add_argument("--target", help="target column(s) of a data file: indices or CSV header names, "
                                        "comma-separated (default: the last column); of Parquet data: "
                                        "column names (required)")
    train.add_argument("--n-samples", type=options.parse_positive_int, default=5000,
                       help="rows of seed-linear (default 5000)")
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
    train.add_argument("--checkpoint-every", type=options.parse_positive_int, default=None, metavar="N")
    train.add_argument("--resume", action="store_true",
                       help="continue from --checkpoint (same data and options; the result equals an "
                            "uninterrupted run)")
    train.add_argument("--summary", nargs="?", const="nonrobust", choices=COV_TYPES, metavar="COV_TYPE",
                       help="after the fit, print the inference summary (standard errors, t, p, intervals) of each "
                            f"run; COV_TYPE one of {', '.join(COV_TYPES)} (default nonrobust). Inference refuses "
                            "fits that have not converged (it says why): solver=normal is exact")
    options.add_flags(train)
    add_streaming_arguments(train)
    train.set_defaults(handler=_train)
    compile_kernels = commands.add_parser(
        "compile", help="compile the common CPU kernels into the Numba cache in advance (images, CI)",
        description="Compile linreg's CPU kernels for the given dtypes, feature counts and kinds of fit into "
                    "Numba's on-disk cache (NUMBA_CACHE_DIR, else __pycache__ beside the kernels), so that "
                    "later processes load them in a fraction of a second instead of compiling; and build the "
                    "ahead-of-time compiled library of the plain GD loop (1-8 features, linreg.aot), with "
                    "which such a fit does not import Numba at all.")
    compilation.add_arguments(compile_kernels)
    compile_kernels.set_defaults(handler=_compile)
    report = commands.add_parser(
        "report", add_help=False, help="benchmark every provider here and write a performance report (needs a "
        "source checkout: the harness is benchmarks/harness.py)")
    report.set_defaults(handler=None)  # main() hands everything after "report" to the harness
    return parser


def benchmark_harness():
    """``benchmarks/harness.py`` of this source checkout, imported; CliError if linreg is installed without it.

    The harness (workloads, competitor implementations, timing, plots) is not part of the installed
    package: it lives beside the suites that share it, in the repository's ``benchmarks/``.
    """
    import importlib

    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    if not (folder / "harness.py").is_file():
        raise CliError("linreg report runs the benchmark harness of a source checkout (benchmarks/harness.py), "
                       f"which is not next to this installation ({folder}): clone the repository and "
                       "pip install -e . there")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module("harness")




# --------------------------------------------------------------------------- streaming (out of core, distributed)

def add_streaming_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of out-of-core and distributed training, for ``linreg train``."""
    group = parser.add_argument_group("out of core and distributed (see docs/scale.md)")
    add = group.add_argument
    add("--target-file", metavar="NPY", help="targets as a .npy file, (n_samples,) or (n_samples, n_outputs): "
                                             "then --dataset is the features .npy and both stream from disk "
                                             "(or a scipy.sparse .npz matrix, loaded in memory)")
    add("--weight-file", metavar="NPY", help="per-row sample weights as a .npy file (n_samples,), streamed (with a "
                                             "sparse --dataset: loaded)")
    add("--features", metavar="COLUMNS", help="Parquet data: the feature columns, comma-separated (default: every "
                                              "column but the target and weight columns)")
    add("--weight-column", metavar="COLUMN", help="Parquet data: the column of per-row sample weights")
    add("--chunk-mb", type=float, default=outofcore.CHUNK_BYTES / 2**20,
        help=f"memory for the chunk buffers, MiB (default {outofcore.CHUNK_BYTES / 2**20:g})")
    add("--distributed", action="store_true",
        help="data-parallel over torch.distributed: launch with torchrun --nproc-per-node N ...")
    add("--dist-backend", choices=distributed.BACKENDS, default="gloo",
        help="gloo (CPU, default) or nccl (one GPU per rank)")
    add("--dist-timeout", type=float, default=distributed.DEFAULT_TIMEOUT_S, metavar="SECONDS",
        help=f"rendezvous and collective timeout (default {distributed.DEFAULT_TIMEOUT_S:g}); "
             "must exceed one epoch's pass")
    add("--run-log", metavar="JSON", help="write a JSON log of the run (rank 0): shards, epoch times, losses")


def _streaming_params(args: argparse.Namespace, show_progress: bool) -> dict:
    return options.params_from_flags(args, random_state=args.seed, progress=show_progress and not args.no_progress)


def _streamed_data(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(X, y, sample_weight) of a streaming run, as ``outofcore.train`` takes them: .npy paths, or Parquet data
    with its target and weight columns named."""
    if not parquet.is_parquet(args.dataset):
        if args.features is not None or args.weight_column is not None:
            raise CliError("--features and --weight-column name columns of Parquet data; --dataset "
                           f"{args.dataset} is not a .parquet file or a directory of them")
        return args.dataset, args.target_file, args.weight_file
    target = getattr(args, "target", None)
    if args.target_file is not None or args.weight_file is not None or not target:
        raise CliError("Parquet data names its columns: give --dataset data.parquet --target COLUMN[,COLUMN...] "
                       "(and --weight-column COLUMN for weights), not --target-file / --weight-file")
    targets = [name.strip() for name in target.split(",")]
    features = [name.strip() for name in args.features.split(",")] if args.features else None
    return (parquet.Parquet(args.dataset, features), targets[0] if len(targets) == 1 else targets,
            args.weight_column)


def _describe(args: argparse.Namespace) -> str:
    if args.target_file is None and getattr(args, "target", None):
        return f"{args.dataset} (target {args.target})"
    return f"{args.dataset} + {args.target_file}"


def run_streaming(args: argparse.Namespace) -> int:
    """``linreg train --dataset X.npy --target-file y.npy [--distributed]`` or ``--dataset data.parquet --target y``:
    stream, train, rank 0 reports."""
    _streamed_data(args)  # the Parquet flags' errors
    if not parquet.is_parquet(args.dataset) and (args.target_file is None or getattr(args, "target", None)
                                                 is not None):
        raise CliError("streaming (out-of-core or --distributed) training reads features and targets from two "
                           ".npy files or from Parquet data: give --dataset X.npy --target-file y.npy (and no "
                           "--target), or --dataset data.parquet --target COLUMN")
    if getattr(args, "resume", False) or getattr(args, "checkpoint", None) is not None:
        raise CliError("--checkpoint and --resume are not supported with --target-file / --distributed "
                           "(streaming) training yet")
    if not np.isfinite(args.chunk_mb) or args.chunk_mb <= 0:
        raise CliError(f"--chunk-mb must be a positive number of MiB, got {args.chunk_mb}")
    dist = None
    if args.distributed:  # torch only when asked for: a single-process streaming run stays torch-free
        import torch.distributed as dist
    started_group = dist is not None and not dist.is_initialized()
    try:
        if dist is not None:
            distributed.init(args.dist_backend, args.dist_timeout)
        return _train_and_report(args, dist.get_rank() if dist is not None else 0)
    except distributed.DistributedError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if started_group and dist.is_initialized():
            dist.destroy_process_group()


def _train_and_report(args: argparse.Namespace, this_rank: int) -> int:
    from linreg.estimator import DivergenceError, LinearRegressor

    model = LinearRegressor(**_streaming_params(args, show_progress=this_rank == 0))
    chunk_bytes = int(args.chunk_mb * 2**20)
    started = time.perf_counter()
    collectives: dict = {}
    X, y, sample_weight = _streamed_data(args)
    try:
        if args.distributed:
            report, collectives = distributed.train(model, X, y, sample_weight, chunk_bytes=chunk_bytes)
        else:
            report = outofcore.train(model, X, y, sample_weight, chunk_bytes=chunk_bytes)
    except DivergenceError as error:
        if this_rank == 0:
            print(f"error: {error}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise CliError(f"rank {this_rank}: {error}" if args.distributed else str(error)) from None
    seconds = time.perf_counter() - started
    if this_rank == 0:
        _report(args, model, report, collectives, seconds)
    if getattr(args, "summary", None):  # every rank takes part in the statistics pass; rank 0 prints
        _streamed_summary(args, model, this_rank, chunk_bytes)
    return 0


def _streamed_summary(args: argparse.Namespace, model, this_rank: int, chunk_bytes: int) -> None:
    from linreg import inference

    X, y, sample_weight = _streamed_data(args)
    streamed: dict[str, Any] = {"sample_weight": sample_weight, "chunk_bytes": chunk_bytes}
    if args.distributed:
        streamed["team"] = distributed.TorchCollective()
    if this_rank == 0:
        print_summaries([("this run", model, 0.0)], X, y, args.summary, **streamed)
    else:
        try:
            inference.compute(model, X, y, cov_type=args.summary, **streamed)
        except ValueError:
            pass  # rank 0 prints the reason


def _report(args: argparse.Namespace, model, report: outofcore.Report, collectives: dict, seconds: float) -> None:
    where = f"{report.world_size} ranks ({collectives.get('backend')})" if args.distributed else "one process"
    print(f"dataset {_describe(args)}: {report.n_samples} x {report.n_features} -> "
          f"{report.n_outputs} {report.dtype}, streamed in chunks of {report.chunk_rows} rows on {where}; "
          f"solver={args.solver}, lr={args.lr}", flush=True)
    print(result_table([("this run", model, seconds)], None))
    if report.epoch_seconds:
        print(f"epoch time: median {np.median(report.epoch_seconds):.4g} s over {len(report.epoch_seconds)} epochs")
    if args.plot:
        plot_loss([("this run", model.loss_history_)], Path(args.plot), str(args.dataset))
        print(f"loss curve written to {args.plot}")
    if args.save:
        model.save(args.save)
        print(f"model written to {args.save}")
    if args.run_log:
        log = {"dataset": str(args.dataset), "target_file": str(args.target_file),
               "target": getattr(args, "target", None), **_jsonable(report),
               "distributed": bool(args.distributed), "collectives": collectives,
               "threads_per_rank": _numba_threads(), "params": {k: v for k, v in model.get_params().items()
                                                                  if k != "init" or isinstance(v, str)},
               "n_iter": model.n_iter_, "stop_reason": model.stop_reason_, "lr": model.lr_,
               "loss_history": model.loss_history_.tolist(), "coef": np.asarray(model.coef_).tolist(),
               "intercept": np.asarray(model.intercept_).tolist(), "wall_seconds": seconds}
        Path(args.run_log).write_text(json.dumps(log, indent=1))
        print(f"run log written to {args.run_log}")


def _jsonable(report: outofcore.Report) -> dict:
    import dataclasses

    values = dataclasses.asdict(report)
    values["shards"] = [list(shard) for shard in report.shards]
    return values


def _numba_threads() -> int:
    import numba

    return numba.get_num_threads()


def build_streaming_parser() -> argparse.ArgumentParser:
    """``python -m linreg.distributed``: ``linreg train``'s streaming flags, usable before the CLI integrates them."""
    parser = argparse.ArgumentParser(prog="python -m linreg.distributed",
                                     description="Out-of-core or (with --distributed, under torchrun) data-parallel "
                                                 "training from .npy files or Parquet data; the same flags as "
                                                 "linreg train.")
    parser.add_argument("--dataset", required=True, metavar="NPY_OR_PARQUET",
                        help="features .npy (n_samples, n_features), or Parquet data (a .parquet file or a directory "
                             "of them) with --target")
    parser.add_argument("--target", metavar="COLUMNS", help="Parquet data: the target column(s), comma-separated")
    parser.add_argument("--seed", type=int, default=0, help="random seed of init=randn and the shuffle (default 0)")
    parser.add_argument("--plot", metavar="PNG", help="write the loss curve to this file")
    parser.add_argument("--save", metavar="NPZ", help="write the fitted model to this file (rank 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    options.add_flags(parser)
    add_streaming_arguments(parser)
    return parser


def streaming_main(argv: list[str] | None = None) -> int:
    parser = build_streaming_parser()
    args = parser.parse_args(argv)
    try:
        return run_streaming(args)
    except CliError as error:
        parser.exit(2, f"linreg: error: {error}\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["report"]:  # the harness parses its own flags (linreg report --help lists them)
            return benchmark_harness().main(argv[1:])
        args = parser.parse_args(argv)
        return args.handler(args)
    except CliError as error:
        parser.exit(2, f"linreg: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
