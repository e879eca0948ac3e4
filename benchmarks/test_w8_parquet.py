"""W8 streamed epochs from a Parquet file against the same numbers in .npy files (issue 14: within 2x).

Every provider runs ``linreg.outofcore`` (the same trainer, the same chunk budget): only
the row source differs. ``parquet`` is a file written with pyarrow's defaults
(snappy, dictionary pages, 1Mi-row groups), as users' files are; ``parquet-plain``
the same numbers uncompressed and without dictionary pages (``compression="none",
use_dictionary=False``), which isolates the cost of decompressing and decoding pages
from the reader's own work; the .npy files are read with plain file reads. All sit in
the page cache after the first epoch, so this compares decoding Parquet with copying
``.npy`` rows, not the disk.

    pytest benchmarks/test_w8_parquet.py [--quick]      # pytest-benchmark, one group per mode
    python benchmarks/test_w8_parquet.py [--quick]      # the same, timed in turns: prints the ratio

Full: 2,000,000 x 32 float32 (256 MB of X); quick: 200,000 x 32.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from linreg import LinearRegressor, outofcore

MODES = {"gd": {"epochs": 3, "lr": 0.01}, "sgd-256": {"epochs": 1, "lr": 0.001, "batch_size": 256}}
EPOCHS = {name: options["epochs"] for name, options in MODES.items()}


def shape(quick: bool) -> tuple[int, int]:
    return (200_000, 32) if quick else (2_000_000, 32)


def write_files(folder: Path, n_samples: int, n_features: int) -> dict[str, Path]:
    """X.npy, y.npy, data.parquet and plain.parquet (x0..x31 and target) holding the same float32 numbers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = {"X": folder / "X.npy", "y": folder / "y.npy", "parquet": folder / "data.parquet",
             "parquet-plain": folder / "plain.parquet"}
    outofcore.write_synthetic(paths["X"], paths["y"], n_samples, n_features, dtype=np.float32, random_state=8)
    X, y = np.load(paths["X"], mmap_mode="r"), np.load(paths["y"], mmap_mode="r")
    schema = pa.schema([(f"x{j}", pa.float32()) for j in range(n_features)] + [("target", pa.float32())])
    for name, options in (("parquet", {}), ("parquet-plain", {"compression": "none", "use_dictionary": False})):
        with pq.ParquetWriter(paths[name], schema, **options) as writer:
            for start in range(0, n_samples, 1 << 20):  # pyarrow's default row group: 1Mi rows
                rows = slice(start, start + (1 << 20))
                writer.write_table(pa.table({**{f"x{j}": np.asarray(X[rows, j]) for j in range(n_features)},
                                             "target": np.asarray(y[rows])}))
    return paths


def providers(paths: dict[str, Path], mode: str) -> dict:
    options = MODES[mode]
    return {"npy": lambda: outofcore.fit(LinearRegressor(**options), paths["X"], paths["y"]),
            "parquet": lambda: outofcore.fit(LinearRegressor(**options), paths["parquet"], "target"),
            "parquet-plain": lambda: outofcore.fit(LinearRegressor(**options), paths["parquet-plain"], "target")}


@pytest.fixture(scope="module")
def files(request, tmp_path_factory):
    from bench import quick_mode

    return write_files(tmp_path_factory.mktemp("w8"), *shape(quick_mode(request.config)))


@pytest.mark.parametrize("source", ["npy", "parquet", "parquet-plain"])
@pytest.mark.parametrize("mode", list(MODES))
def test_w8_parquet_epochs(benchmark, files, mode, source):
    n_samples, n_features = np.load(files["X"], mmap_mode="r").shape
    benchmark.group = f"W8 streamed {mode} epochs {n_samples:,}x{n_features} float32: parquet vs npy"
    fit = providers(files, mode)[source]
    fit()  # compiles or loads the kernels, and puts the files in the page cache
    benchmark.extra_info.update({"source": source, "rows per round": n_samples * EPOCHS[mode]})
    benchmark.pedantic(fit, rounds=3, iterations=1, warmup_rounds=0)


def main(argv: list[str] | None = None) -> int:
    """The sources timed in turns (``harness.time_interleaved``); prints each mode's parquet/npy time ratios."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200,000 rows instead of 2,000,000")
    args = parser.parse_args(argv)
    n_samples, n_features = shape(args.quick)
    with tempfile.TemporaryDirectory() as folder:
        paths = write_files(Path(folder), n_samples, n_features)
        sizes = {name: paths[name].stat().st_size / 2**20 for name in ("X", "parquet", "parquet-plain")}
        print(f"{n_samples:,} x {n_features} float32: X.npy {sizes['X']:.0f} MiB, data.parquet "
              f"{sizes['parquet']:.0f} MiB, plain.parquet {sizes['parquet-plain']:.0f} MiB; chunk budget "
              f"{outofcore.CHUNK_BYTES >> 20} MiB")
        for mode in MODES:
            timed = harness.time_interleaved(providers(paths, mode), budget_s=2.0 if args.quick else 8.0,
                                             min_rounds=3, pause_s=0.2)
            best = {name: result["min"] for name, result in timed.items()}
            rows = n_samples * EPOCHS[mode]
            cells = [f"{name} {best[name] * 1e3:7.1f} ms ({rows / best[name] / 1e6:5.1f} M rows/s"
                     + ("" if name == "npy" else f", {best[name] / best['npy']:.2f}x npy") + ")" for name in best]
            print(f"{mode:8s} " + "   ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
