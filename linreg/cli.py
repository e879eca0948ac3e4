"""``linreg`` command line: ``linreg train`` runs seed 000's problem by default."""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

from linreg import datasets
from linreg.backends import BACKENDS
from linreg.estimator import INITS, DivergenceError, LinearRegressor


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


def result_table(model: LinearRegressor, truth, seconds: float) -> str:
    coef = np.atleast_2d(model.coef_)
    intercept = np.atleast_1d(model.intercept_)
    rows = []
    if truth is not None:
        true_coef, true_bias = truth
        rows.append(f"{'':10}{'learned':>14}{'true':>10}{'error':>12}")
        for f, (learned, true) in enumerate(zip(coef[0], true_coef, strict=True)):
            rows.append(f"{f'w[{f}]':10}{learned:14.6f}{true:10g}{learned - true:12.2e}")
        rows.append(f"{'bias':10}{intercept[0]:14.6f}{true_bias:10g}{intercept[0] - true_bias:12.2e}")
    else:
        for o in range(coef.shape[0]):
            weights = " ".join(f"{value:12.6f}" for value in coef[o])
            rows.append(f"output {o}:  w = [{weights} ]  b = {intercept[o]:.6f}")
    history = model.loss_history_
    rows.append(f"final loss  {history[-1]:.6g} (epoch {len(history) - 1}, before its update)")
    rows.append(f"wall time   {seconds:.3f} s on backend {model.backend!r}{_threads(model.backend)}")
    return "\n".join(rows)


def _threads(backend: str) -> str:
    if backend != "cpu":
        return ""
    import numba

    from kernels import cpu

    return f" ({numba.get_num_threads()} threads, {cpu.threading_layer()} threading layer)"


def plot_loss(history: np.ndarray, path: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CliError("--plot needs matplotlib: pip install 'numba-linreg[plot]'") from None
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.semilogy(np.arange(len(history)), history)
    axes.set(xlabel="epoch", ylabel="MSE loss (before the update)", title=title)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _train(args: argparse.Namespace) -> int:
    X, y, truth = load_dataset(args.dataset, target=args.target, n_samples=args.n_samples, seed=args.seed)
    model = LinearRegressor(epochs=args.epochs, lr=args.lr, init=args.init, backend=args.backend,
                            random_state=args.seed, progress=not args.no_progress)
    print(f"dataset {args.dataset}: X {X.shape} {X.dtype}, y {np.shape(y)}; "
          f"{args.epochs} epochs of full-batch gradient descent, lr={args.lr:g}, init={args.init}", flush=True)
    start = time.perf_counter()
    try:
        model.fit(X, y)
    except DivergenceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as error:
        raise CliError(str(error)) from None
    seconds = time.perf_counter() - start
    print(result_table(model, truth, seconds))
    if args.plot:
        plot_loss(model.loss_history_, Path(args.plot), f"{args.dataset}, lr={args.lr:g}, {args.backend}")
        print(f"loss curve written to {args.plot}")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linreg", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a linear model (default: seed 000's problem and settings)")
    train.add_argument("--dataset", default="seed-linear",
                       help="seed-linear (seed 000), crops (seed 003), or a .npy/.npz/.csv file")
    train.add_argument("--target", help="target column(s) of a data file: indices or CSV header names, "
                                        "comma-separated (default: the last column)")
    train.add_argument("--n-samples", type=_positive_int, default=5000, help="rows of seed-linear (default 5000)")
    train.add_argument("--epochs", type=_positive_int, default=500, help="default 500 (seed 000)")
    train.add_argument("--lr", type=_positive_float, default=1e-5, help="learning rate, default 1e-5 (seed 000)")
    train.add_argument("--init", choices=INITS, default="ones", help="initial parameters (default ones, seed 000)")
    train.add_argument("--backend", choices=tuple(BACKENDS), default="cpu")
    train.add_argument("--seed", type=int, default=0, help="random seed of the data and of init=randn (default 0)")
    train.add_argument("--plot", metavar="PNG", help="write the loss curve to this file")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train)
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
