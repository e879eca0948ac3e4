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

    python benchmarks/test_w8_parquet.py --profile      # where the time of one pass over X goes, per stage

Full: 2,000,000 x 32 float32 (256 MB of X); quick: 200,000 x 32.

The files' format, as pyarrow 26 writes them: 33 float32 columns (x0..x31, target),
not null in the data but nullable in the schema (so each page has definition
levels: one RLE run); row groups of 1Mi rows (the last one shorter); data pages
v1 of at most 20,000 rows (pyarrow's ``data_page_row_count_limit``; ~80 KB a
page for float32). ``data.parquet``: snappy, a 1 MiB dictionary page per column
chunk whose ~262,000 distinct values encode the group's first ~262,000 rows
(RLE_DICTIONARY pages, 18-bit indices), then PLAIN pages for the rest (the
writer's fallback once the dictionary is full: random floats do not repeat);
snappy gains nothing on random floats (287 MiB against 251 MiB uncompressed, the
dictionary pages included). ``plain.parquet``: uncompressed PLAIN pages.
Each file is timed with the spill (``linreg.spill``: a fit of several passes, here GD's 3 epochs,
decodes the first and reads the others from a spill file; the default) and "decoded each pass"
(``parquet.SPILL`` off); the main script also prints GD's first epoch and its later epochs apart
(``outofcore.Report.epoch_seconds``): the spill's write is in the first, its reads in the others.
Both are read by ``linreg.parquet_pages`` (its fast path); ``--variants`` also
times pyarrow's record-batch reader, the reader without the background thread, and
with one decoding thread instead of two.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from linreg import LinearRegressor, outofcore, parquet

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


def providers(paths: dict[str, Path], mode: str, variants: bool = False, reports: dict | None = None) -> dict:
    """npy and both Parquet files, each Parquet file with the spill (``linreg.spill``: a fit of several passes
    decodes the first and reads the others from a spill file; the default) and without it ("decoded each pass",
    ``parquet.SPILL`` off); with ``variants`` also each file read by pyarrow's record batches
    (``parquet.PAGE_READER`` off), by the page reader without the background thread (``parquet.PREFETCH`` off),
    and with one decoding thread (``parquet.DECODE_THREADS`` 1: a fill the caller waits for is not split), all
    three without the spill. ``reports``: each provider's ``outofcore.Report`` of its last fit, by name."""
    options = MODES[mode]

    def fit(name: str, path: str, page_reader: bool = True, prefetch: bool = True, decode_threads: int | None = None,
            spill: bool = True):
        def run():
            saved = parquet.PAGE_READER, parquet.PREFETCH, parquet.DECODE_THREADS, parquet.SPILL
            parquet.PAGE_READER, parquet.PREFETCH, parquet.SPILL = page_reader, prefetch, spill
            parquet.DECODE_THREADS = decode_threads or saved[2]
            try:
                y = "target" if path != "X" else paths["y"]
                report = outofcore.train(LinearRegressor(**options), paths[path], y)
                if reports is not None:
                    reports[name] = report
            finally:
                parquet.PAGE_READER, parquet.PREFETCH, parquet.DECODE_THREADS, parquet.SPILL = saved
        return run

    found = {"npy": fit("npy", "X")}
    for name in ("parquet", "parquet-plain"):
        found[name] = fit(name, name)
        found[f"{name} decoded each pass"] = fit(f"{name} decoded each pass", name, spill=False)
    if variants:
        for name in ("parquet", "parquet-plain"):
            found[f"{name} pyarrow"] = fit(f"{name} pyarrow", name, page_reader=False, spill=False)
            found[f"{name} serial"] = fit(f"{name} serial", name, prefetch=False, spill=False)
            found[f"{name} 1 decoder"] = fit(f"{name} 1 decoder", name, decode_threads=1, spill=False)
    return found


def profile(paths: dict[str, Path], rounds: int = 3) -> dict[str, dict[str, float]]:
    """Milliseconds (best of ``rounds``) of each stage of one pass over X (the 32 feature columns), chunk by chunk
    as the trainer reads it, for both files; the .npy read and the gradient kernel for comparison."""

    import pyarrow as pa
    import pyarrow.parquet as pq

    from linreg import parquet_pages
    from linreg.kernels import cpu_columns

    data = outofcore.open_dataset(paths["parquet"], "target")
    chunk_rows, n, n_features = outofcore.chunk_rows_for(data, outofcore.CHUNK_BYTES), data.n_samples, data.n_features
    data.close()
    bounds = [(start, min(start + chunk_rows, n)) for start in range(0, n, chunk_rows)]
    columns = [f"x{j}" for j in range(n_features)]
    rows = np.empty((chunk_rows, n_features), np.float32)
    W, b, sums = np.zeros((1, n_features)), np.zeros(1), outofcore._Sums(n_features, 1)
    targets = np.zeros((chunk_rows, 1), np.float32)

    def best(run) -> float:
        times = []
        for _ in range(rounds):
            time.sleep(0.2)
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        return min(times) * 1e3

    def npy_read():
        source = outofcore.open_rows(paths["X"], "X")
        for start, stop in bounds:
            source.read(start, stop, rows[:stop - start])
        source.close()

    def kernel():
        for start, stop in bounds:
            sums.of(rows[:stop - start], targets[:stop - start], W, b, None)

    def stages_of(path: str) -> dict[str, float]:
        metadata = pq.read_metadata(path)
        chunks = [metadata.row_group(g).column(j) for g in range(metadata.num_row_groups) for j in range(n_features)]
        fd = os.open(path, os.O_RDONLY)
        pages = [parquet_pages.ColumnChunkPages(fd, c, metadata.schema.column(j % n_features))
                 for j, c in enumerate(chunks)]
        raw = np.empty(max(c.total_compressed_size for c in chunks), np.uint8)

        def page_read():
            for c in chunks:
                start = c.dictionary_page_offset or c.data_page_offset
                parquet_pages._pread_into(fd, raw[:c.total_compressed_size], start)

        # Every page's body read once (outside the timings), for the decode stages below.
        bodies = []
        for chunk_pages in pages:
            for page in chunk_pages.pages:
                body = np.empty(int(page[parquet_pages.P_COMPRESSED_SIZE]), np.uint8)
                parquet_pages._pread_into(fd, body, int(page[parquet_pages.P_BODY]))
                bodies.append((chunk_pages, page, body, np.empty(int(page[parquet_pages.P_UNCOMPRESSED_SIZE]),
                                                                  np.uint8)))
        compressed = [b for b in bodies if b[0].codec != "UNCOMPRESSED"]
        codec = pa.Codec("snappy")
        dictionaries = {id(c): c._dictionary_values(parquet_pages.DecodeBuffers(1 << 20)) for c, p, *_ in bodies
                        if p[parquet_pages.P_KIND] == 2}
        for _, _, body, out in compressed:
            cpu_columns.snappy_decompress(body, out)
        indices = [(c, p, out if c.codec != "UNCOMPRESSED" else body, np.empty(int(p[parquet_pages.P_NUM_VALUES]),
                                                                                c.dtype))
                   for c, p, body, out in bodies if p[parquet_pages.P_ENCODING] in (2, 8)
                   and p[parquet_pages.P_KIND] != 2]

        def dictionary_indices():
            for c, p, data, out in indices:
                at = c._definition_levels(p, data)
                cpu_columns.dictionary_decode(data[at:], int(p[parquet_pages.P_NUM_VALUES]), 0,
                                              dictionaries[id(c)], out)

        kinds = np.concatenate([c.pages[:, parquet_pages.P_ENCODING] * 10 + c.pages[:, parquet_pages.P_KIND]
                                for c in pages])
        print(f"{Path(path).name}: {int((kinds == 2).sum())} dictionary pages, {int((kinds == 80).sum())} "
              f"RLE_DICTIONARY data pages ({sum(o.shape[0] for *_, o in indices):,} values), "
              f"{int((kinds == 0).sum())} PLAIN data pages")
        def arrow_batches(convert: bool):
            def run():
                source = parquet.ParquetFiles(path).open(0)
                for g in range(metadata.num_row_groups):
                    for batch in source.iter_batches(batch_size=chunk_rows, row_groups=[g], columns=columns):
                        if convert:
                            arrays = [batch.column(j).to_numpy() for j in range(n_features)]
                            parquet._columns_to_rows(arrays, list(range(n_features)), rows[:batch.num_rows])
                source.close()
            return run

        sample = next(parquet.ParquetFiles(path).open(0).iter_batches(batch_size=chunk_rows, columns=columns))
        arrays = [sample.column(j).to_numpy() for j in range(n_features)]
        scale = n / sample.num_rows

        def reader(page_reader: bool, fill_only: bool = False, threads: int = 1):
            def run():
                saved, parquet.PAGE_READER = parquet.PAGE_READER, page_reader
                try:
                    source = outofcore.open_dataset(path, "target").X
                    for start, stop in bounds:
                        if fill_only:
                            source._fill_pages(start, stop, threads)
                        else:
                            source.read(start, stop, rows[:stop - start])
                    run.source = source
                    source.close()
                finally:
                    parquet.PAGE_READER = saved
            return run

        fill = reader(True, fill_only=True)
        fill2 = reader(True, fill_only=True, threads=2)
        fill(), fill2()
        buffer = parquet._column_buffer(n_features, chunk_rows, np.dtype(np.float32))
        buffer[:] = 0
        kernel(), npy_read()
        stages = {
            "open + footer": best(lambda: pq.ParquetFile(path).metadata),
            "page read (pread of the column chunks)": best(page_read),
            "snappy, pyarrow's codec (every page)": best(
                lambda: [codec.decompress(body, decompressed_size=out.shape[0]) for _, _, body, out in compressed]),
            "snappy, ours (snappy_decompress, every page)": best(
                lambda: [cpu_columns.snappy_decompress(body, out) for _, _, body, out in compressed]),
            "dictionary indices -> values (dictionary_decode)": best(dictionary_indices),
            "pyarrow decode to Arrow (iter_batches)": best(arrow_batches(False)),
            "Arrow -> NumPy (to_numpy)": best(lambda: [a.to_numpy() for a in sample.columns]) * scale,
            "Arrow columns -> rows (columns_to_rows)": best(
                lambda: parquet._columns_to_rows(arrays, list(range(n_features)), rows[:sample.num_rows])) * scale,
            "pyarrow path, whole (decode + rows)": best(arrow_batches(True)),
            "page reader fill, 1 thread (pages -> column buffer)": best(fill),
            "page reader fill, 2 threads": best(fill2),
            "column-major -> rows (column_major_to_rows)": best(
                lambda: [cpu_columns.column_major_to_rows(buffer[:, :stop - start], rows[:stop - start])
                         for start, stop in bounds]),
            "page reader, whole (ParquetColumns.read: fill + rows)": best(reader(True)),
            "gradient kernel (_Sums.of)": best(kernel),
            ".npy read (readinto)": best(npy_read),
        }
        os.close(fd)
        return stages

    return {kind: stages_of(str(paths[kind])) for kind in ("parquet", "parquet-plain")}


@pytest.fixture(scope="module")
def files(request, tmp_path_factory):
    from bench import quick_mode

    return write_files(tmp_path_factory.mktemp("w8"), *shape(quick_mode(request.config)))


@pytest.mark.parametrize("source", ["npy", "parquet", "parquet-plain", "parquet decoded each pass",
                                    "parquet-plain decoded each pass"])
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
    parser.add_argument("--profile", action="store_true", help="time the stages of one pass instead of fits")
    parser.add_argument("--variants", action="store_true", help="also time pyarrow's reader and no prefetch")
    args = parser.parse_args(argv)
    n_samples, n_features = shape(args.quick)
    with tempfile.TemporaryDirectory() as folder:
        paths = write_files(Path(folder), n_samples, n_features)
        sizes = {name: paths[name].stat().st_size / 2**20 for name in ("X", "parquet", "parquet-plain")}
        print(f"{n_samples:,} x {n_features} float32: X.npy {sizes['X']:.0f} MiB, data.parquet "
              f"{sizes['parquet']:.0f} MiB, plain.parquet {sizes['parquet-plain']:.0f} MiB; chunk budget "
              f"{outofcore.CHUNK_BYTES >> 20} MiB")
        if args.profile:
            stages = profile(paths)
            print(f"{'one pass over X, ms (best of 3)':46s} {'data.parquet':>14s} {'plain.parquet':>14s}")
            for stage in stages["parquet"]:
                print(f"{stage:46s} {stages['parquet'][stage]:14.1f} {stages['parquet-plain'][stage]:14.1f}")
            print(f"load average {os.getloadavg()[0]:.1f}")
            return 0
        for mode in MODES:
            # CPU time (all threads of the process) too: on a loaded machine it moves less than wall time; and
            # each fit's epochs (outofcore.Report): the first pass (which writes the spill) and the later ones.
            cpu: dict[str, list[float]] = {}
            first: dict[str, list[float]] = {}
            later: dict[str, list[float]] = {}
            reports: dict = {}

            def with_cpu_time(name, fit, cpu=cpu, first=first, later=later, reports=reports):
                def run():
                    started = time.process_time()
                    fit()
                    cpu.setdefault(name, []).append(time.process_time() - started)
                    seconds = reports[name].epoch_seconds
                    first.setdefault(name, []).append(seconds[0])
                    if len(seconds) > 1:
                        later.setdefault(name, []).append(float(np.mean(seconds[1:])))
                return run

            fits = {name: with_cpu_time(name, fit)
                    for name, fit in providers(paths, mode, args.variants, reports).items()}
            timed = harness.time_interleaved(fits, budget_s=2.0 if args.quick else 8.0, min_rounds=3, pause_s=0.2)
            best = {name: result["min"] for name, result in timed.items()}
            best_cpu = {name: min(times) for name, times in cpu.items()}
            rows = n_samples * EPOCHS[mode]
            cells = [f"{name:32s} {best[name] * 1e3:7.1f} ms ({rows / best[name] / 1e6:5.1f} M rows/s"
                     + ("" if name == "npy" else f", {best[name] / best['npy']:.2f}x npy") + f"), CPU "
                     f"{best_cpu[name] * 1e3:7.1f} ms" + ("" if name == "npy" else
                                                          f" ({best_cpu[name] / best_cpu['npy']:.2f}x npy)")
                     for name in best]
            print(f"{mode:8s} " + "\n         ".join(cells))
            if later:  # several epochs: the first (decode, and the spill's write) and the steady state apart
                print(f"{mode:8s} epochs, best of the rounds: first epoch / later epochs' mean, ms (x npy's)")
                for name in best:
                    one, rest = min(first[name]), min(later[name])
                    print(f"         {name:32s} {one * 1e3:7.1f} ms ({one / min(first['npy']):.2f}x) / "
                          f"{rest * 1e3:7.1f} ms ({rest / min(later['npy']):.2f}x)")
        print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
