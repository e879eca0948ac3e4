"""Parquet data streamed out of core (linreg.parquet): every mode equals the dense in-memory fit on the same numbers,
memory stays within the chunk budget, bad data is named, two ranks train the single-process model.

The chunk budget is small and the row groups (700 rows; a directory of three files of
different group sizes) do not line up with the chunks, so reads cross row groups and
files. Tolerances are the .npy tests' (tests/scale/test_outofcore.py): full-batch GD over
chunks differs from the in-memory pass only in the order the chunks' sums are added
(1e-12); the exact and Gram solvers sum Gram statistics and their loss formula cancels
(1e-10).
"""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from helpers import GD_OPTIONS, LAUNCH_TIMEOUT, assert_same_fit, run_ranks, torch_reference_fit

from linreg import LinearRegressor, load, outofcore
from linreg import cli as linreg_cli
from linreg.parquet import Parquet
from linreg.testing import assert_close

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
ds = pytest.importorskip("pyarrow.dataset")

SMALL_BUDGET = 40_000  # ~270 rows of the 7-feature, 2-output float64 problem: ~19 chunks
N_SAMPLES = 5003
FEATURES = [f"f{j}" for j in range(7)]


def noisy_problem(n_samples, n_features, n_outputs, seed):
    """Offset, unevenly scaled columns (so standardisation matters) and noisy linear targets, float64."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features)) * rng.uniform(0.5, 4, n_features) + 3.0
    W = rng.standard_normal((n_outputs, n_features))
    return X, X @ W.T + rng.standard_normal(n_outputs) + 0.1 * rng.standard_normal((n_samples, n_outputs))


def table_of(X, Y, weights, rows=slice(None)):
    columns = {name: X[rows, j] for j, name in enumerate(FEATURES)}
    columns.update({"t0": Y[rows, 0], "t1": Y[rows, 1], "w": weights[rows]})
    return pa.table(columns)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The same numbers as arrays, one Parquet file (row groups of 700) and a directory of three files."""
    folder = tmp_path_factory.mktemp("parquet")
    X, Y = noisy_problem(N_SAMPLES, 7, 2, seed=4)
    weights = np.random.default_rng(5).uniform(0.5, 2.0, N_SAMPLES)
    pq.write_table(table_of(X, Y, weights), folder / "data.parquet", row_group_size=700)
    directory = folder / "parts"
    directory.mkdir()
    for k, (rows, group) in enumerate(((slice(0, 1234), 500), (slice(1234, 4000), 999), (slice(4000, None), 2000))):
        pq.write_table(table_of(X, Y, weights, rows), directory / f"part-{k}.parquet", row_group_size=group)
    (directory / "_SUCCESS").write_text("")  # what Spark leaves beside its files: not data
    return {"X": X, "Y": Y, "y": Y[:, 0].copy(), "w": weights, "file": folder / "data.parquet", "dir": directory}


def source_of(data, kind):
    if kind == "file":
        return data["file"]
    if kind == "dir":
        return str(data["dir"])
    return ds.dataset(data["dir"], format="parquet")  # a pyarrow.dataset.Dataset


def parquet_fit(data, kind, options, *, targets="t0", weighted=False, features=None, chunk_bytes=SMALL_BUDGET):
    X = source_of(data, kind)
    if features is not None:
        X = Parquet(X, features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the tol runs: the same on both sides
        return outofcore.fit(LinearRegressor(**options), X, targets, "w" if weighted else None,
                             chunk_bytes=chunk_bytes)


def dense_fit(data, options, *, two_outputs=False, weighted=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LinearRegressor(**options).fit(data["X"], data["Y"] if two_outputs else data["y"],
                                              sample_weight=data["w"] if weighted else None)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("options", GD_OPTIONS)
def test_full_batch_gd_from_a_parquet_file_equals_the_in_memory_fit(data, options, weighted):
    model = parquet_fit(data, "file", options, targets=["t0", "t1"], weighted=weighted, features=FEATURES)
    assert_same_fit(model, dense_fit(data, options, two_outputs=True, weighted=weighted))


@pytest.mark.parametrize("kind", ["dir", "dataset"])
def test_a_directory_and_a_pyarrow_dataset_stream_their_files_in_order(data, kind):
    options = {"epochs": 25, "lr": "auto", "standardize": True, "momentum": 0.5}
    model = parquet_fit(data, kind, options, weighted=True, features=FEATURES)
    assert_same_fit(model, dense_fit(data, options, weighted=True))
    assert list(model.feature_names_in_) == FEATURES


@pytest.mark.parametrize("options", [
    {"solver": "normal"},
    {"solver": "normal", "standardize": True, "penalty": "l2", "alpha": 0.1},
    {"solver": "gram", "epochs": 60, "lr": "auto"},
    {"solver": "gram", "epochs": 60, "lr": "auto", "standardize": True, "momentum": 0.5},
], ids=["normal", "normal-standardize-ridge", "gram-auto", "gram-standardize-momentum"])
@pytest.mark.parametrize("kind", ["file", "dir"])
def test_exact_and_gram_solvers_sum_chunk_statistics(data, options, kind):
    model = parquet_fit(data, kind, options, targets=["t0", "t1"], weighted=True, features=FEATURES)
    assert_same_fit(model, dense_fit(data, options, two_outputs=True, weighted=True), rtol=1e-10)


def test_minibatches_in_order_are_the_in_memory_batches(data):
    options = {"epochs": 4, "lr": 0.002, "batch_size": 96, "shuffle": False, "momentum": 0.5}
    for weighted in (False, True):
        model = parquet_fit(data, "dir", options, targets=["t0", "t1"], weighted=weighted, features=FEATURES)
        assert_same_fit(model, dense_fit(data, options, two_outputs=True, weighted=weighted))


def test_shuffled_minibatches_follow_epoch_batches(data):
    """Shuffled: the trajectory equals torch.optim.SGD fed the batches ``epoch_batches`` lists for this source's
    chunking, as for .npy files; chunks are visited out of order, so reads jump backwards across row groups."""
    torch = pytest.importorskip("torch")
    batch_size, epochs, lr, seed = 64, 3, 0.002, 11
    options = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "random_state": seed}
    model = parquet_fit(data, "file", options, targets=["t0", "t1"], features=FEATURES)
    dataset = outofcore.open_dataset(Parquet(data["file"], FEATURES), ["t0", "t1"])
    chunk_rows = outofcore.chunk_rows_for(dataset, SMALL_BUDGET, batch_size, shuffle=True)
    dataset.close()
    assert N_SAMPLES / chunk_rows >= 5

    def batches(epoch):
        return outofcore.epoch_batches(seed, epoch, N_SAMPLES, chunk_rows, batch_size)

    chunk_sequence = list(dict.fromkeys(int(rows[0] // chunk_rows) for rows in batches(0)))
    assert chunk_sequence != sorted(chunk_sequence)
    W, b, history = torch_reference_fit(data["X"], data["Y"], np.ones((2, 7)), np.ones(2), epochs=epochs,
                                        make_optimizer=lambda w, b: torch.optim.SGD([w, b], lr=lr), batches=batches)
    assert_close(model.loss_history_, history, np.float64, "trajectory", "loss history")
    assert_close(model.coef_, W, np.float64, "trajectory", "coef_")
    assert_close(model.intercept_, b, np.float64, "trajectory", "intercept_")


def test_rows_read_at_any_offset_are_the_stored_rows(data):
    """Forward, backward and overlapping reads across row groups and files: the row source's batch cache."""
    dataset = outofcore.open_dataset(str(data["dir"]), ["t0", "t1"], "w")
    assert dataset.n_samples == N_SAMPLES and list(dataset.feature_names) == FEATURES
    assert dataset.n_features == 7 and dataset.n_outputs == 2 and not dataset.one_output
    rng = np.random.default_rng(0)
    ranges = [(0, 10), (5, 1300), (1200, 1240), (4990, N_SAMPLES), (0, N_SAMPLES), (3999, 4001), (1233, 1235)]
    ranges += [tuple(sorted(rng.integers(0, N_SAMPLES + 1, 2))) for _ in range(30)]
    for start, stop in ranges:
        if stop == start:
            continue
        X, Y, w = np.empty((stop - start, 7)), np.empty((stop - start, 2)), np.empty((stop - start, 1))
        dataset.X.read(start, stop, X)
        dataset.Y.read(start, stop, Y)
        dataset.weights.read(start, stop, w)
        np.testing.assert_array_equal(X, data["X"][start:stop])
        np.testing.assert_array_equal(Y, data["Y"][start:stop])
        np.testing.assert_array_equal(w[:, 0], data["w"][start:stop])
    dataset.close()


def test_estimator_fit_takes_column_names_and_sets_feature_names(data):
    """LinearRegressor.fit(parquet, y="t0", sample_weight="w"): every other column is a feature (here t1 too)."""
    options = {"epochs": 10, "lr": "auto", "standardize": True}
    model = LinearRegressor(**options).fit(str(data["file"]), y="t0", sample_weight="w")
    assert list(model.feature_names_in_) == FEATURES + ["t1"]
    assert np.ndim(model.coef_) == 1 and np.ndim(model.intercept_) == 0  # one target column: a 1-D y
    expected = LinearRegressor(**options).fit(np.column_stack([data["X"], data["Y"][:, 1]]), data["y"],
                                              sample_weight=data["w"])
    assert_same_fit(model, expected)
    chosen = LinearRegressor(**options).fit(Parquet(data["file"], ["f3", "f0"]), y="t1")
    assert list(chosen.feature_names_in_) == ["f3", "f0"]
    assert_same_fit(chosen, LinearRegressor(**options).fit(data["X"][:, [3, 0]], data["Y"][:, 1]))
    assert chosen.predict(data["X"][:5, [3, 0]]).shape == (5,)
    # inference streams the same data: the statistics of the Parquet rows are those of the arrays
    exact = LinearRegressor(solver="normal").fit(data["file"], y="t0", sample_weight="w")
    streamed = exact.inference(data["file"], "t0", "w", cov_type="HC1")
    in_memory = exact.inference(np.column_stack([data["X"], data["Y"][:, 1]]), data["y"], data["w"], cov_type="HC1")
    np.testing.assert_allclose(streamed.bse, in_memory.bse, rtol=1e-9)


def test_large_pieces_go_through_the_columns_kernel(data, tmp_path, monkeypatch):
    """One row group of all 5003 rows and the default budget: pieces of >= KERNEL_ROWS rows, copied by the
    kernel (kernels.cpu_columns), then the same fit."""
    from linreg import parquet
    from linreg.kernels import cpu_columns

    assert N_SAMPLES >= parquet.KERNEL_ROWS
    pq.write_table(table_of(data["X"], data["Y"], data["w"]), tmp_path / "one-group.parquet", row_group_size=N_SAMPLES)
    monkeypatch.setattr(parquet, "PAGE_READER", False)  # pyarrow's record batches (float pages: parquet_pages)
    shapes = []
    original = cpu_columns.columns_to_rows
    monkeypatch.setattr(cpu_columns, "columns_to_rows", lambda *args: shapes.append(args[2].shape) or original(*args))
    options = {"epochs": 20, "lr": 0.01, "momentum": 0.5}
    model = outofcore.fit(LinearRegressor(**options), Parquet(tmp_path / "one-group.parquet", FEATURES), ["t0", "t1"],
                          "w")
    assert (N_SAMPLES, 7) in shapes and (N_SAMPLES, 2) in shapes
    assert_same_fit(model, dense_fit(data, options, two_outputs=True, weighted=True))


def test_dtypes_follow_the_in_memory_table_rules(tmp_path):
    """The in-memory rule for a pyarrow Table (its columns stacked by NumPy): int + float32 columns -> float64 here
    (int64 promotes), int16 + float32 + bool -> float32, integers only -> float32, float16 + float32 -> float32."""
    rng = np.random.default_rng(2)
    n = 3000
    base = {"a": rng.integers(-50, 50, n).astype(np.int64), "b": rng.standard_normal(n).astype(np.float32),
            "c": rng.integers(-9, 9, n).astype(np.int16), "d": rng.random(n) < 0.3,
            "e": rng.standard_normal(n).astype(np.float16)}
    target = (base["a"] * 0.01 + base["b"] - 0.2 * base["c"] + base["d"]).astype(np.float32)
    options = {"epochs": 15, "lr": 0.001, "momentum": 0.5}
    for features, dtype in ((["a", "b"], np.float64), (["c", "b", "d"], np.float32), (["a", "c"], np.float32),
                            (["e", "b"], np.float32)):
        table = pa.table({**{name: base[name] for name in features}, "y": target})
        pq.write_table(table, tmp_path / "t.parquet", row_group_size=1000)
        model = outofcore.fit(LinearRegressor(**options), tmp_path / "t.parquet", "y", chunk_bytes=8_000)
        expected = LinearRegressor(**options).fit(table.select(features), table.column("y"))
        assert model.coef_.dtype == expected.coef_.dtype == dtype, features
        assert list(model.feature_names_in_) == list(expected.feature_names_in_) == features
        # Same data in the same dtype, float64 accumulation and master parameters on both sides: only the chunks'
        # summation order differs, and the parameters are rounded to the data's dtype at the end.
        assert_same_fit(model, expected, rtol=1e-6 if dtype == np.float32 else 1e-12)


# --------------------------------------------------------------------------- bad input


def test_bad_columns_and_files_are_named(data, tmp_path):
    path = data["file"]
    strings = pa.table({"a": [1.0, 2.0, 3.0], "city": ["x", "y", "z"], "y": [1.0, 2.0, 3.0]})
    pq.write_table(strings, tmp_path / "strings.parquet")
    pq.write_table(strings.slice(0, 0), tmp_path / "empty.parquet")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "notes.txt").write_text("no parquet here")
    cases = [
        ((path, "price"), ValueError, r"y: no column 'price' in .*data.parquet; its columns are f0, f1, .*, t0, t1, w"),
        ((path, "t0", "weight"), ValueError, "sample_weight: no column 'weight'"),
        ((Parquet(path, ["f0", "nope"]), "t0"), ValueError, r"features: no column\(s\) 'nope'"),
        ((Parquet(path, ["f0", "t0"]), "t0"), ValueError, r"features \['t0'\] are also the target or weight column"),
        ((path, "t0", "t0"), ValueError, "must be distinct"),
        ((path, data["y"]), TypeError, "y must name column.* got ndarray"),
        ((path, None), ValueError, "y names the target column"),
        ((tmp_path / "strings.parquet", "y"), TypeError, "X column 'city' holds string, not numbers"),
        ((Parquet(tmp_path / "strings.parquet", ["a"]), "city"), TypeError, "y column 'city' holds string"),
        ((tmp_path / "empty.parquet", "y"), TypeError, "X column 'city' holds string"),
        ((Parquet(tmp_path / "empty.parquet", ["a"]), "y"), ValueError, r"is empty: 0 rows"),
        ((tmp_path / "missing.parquet", "y"), FileNotFoundError, "no such Parquet file or directory"),
        ((ds.dataset(path, format="parquet").filter(ds.field("f0") > 3), "t0"), ValueError, "a filtered pyarrow"),
    ]
    for args, error, message in cases:
        model = LinearRegressor(epochs=1)
        with pytest.raises(error, match=message):
            outofcore.fit(model, *args)
        assert not hasattr(model, "coef_")
    assert not outofcore.is_out_of_core(np.ones((2, 2)), np.ones(2))
    assert outofcore.is_out_of_core(ds.dataset(data["dir"], format="parquet"), "t0")


def test_nulls_are_named_by_column_and_global_row(data, tmp_path):
    directory = tmp_path / "nulls"
    directory.mkdir()
    for k, rows in enumerate((slice(0, 2500), slice(2500, None))):
        table = table_of(data["X"], data["Y"], data["w"], rows)
        if k == 1:  # a null in the second file's second row group, and one in its target column
            table = table.set_column(3, "f3", pa.array([None if i == 1700 else v for i, v in
                                                        enumerate(table.column("f3").to_pylist())], pa.float64()))
            table = table.set_column(7, "t0", pa.array([None if i == 2400 else v for i, v in
                                                        enumerate(table.column("t0").to_pylist())], pa.float64()))
        pq.write_table(table, directory / f"part-{k}.parquet", row_group_size=1000)
    for options in ({"epochs": 2, "lr": 0.01}, {"solver": "normal"}):
        with pytest.raises(ValueError, match=r"^X column 'f3' has a null \(missing value\) at row 4200; fill or drop"):
            outofcore.fit(LinearRegressor(**options), directory, "t0", chunk_bytes=SMALL_BUDGET)
    with pytest.raises(ValueError, match=r"^y column 't0' has a null \(missing value\) at row 4900"):
        outofcore.fit(LinearRegressor(epochs=2), Parquet(directory, ["f0", "f1"]), "t0", chunk_bytes=SMALL_BUDGET)
    # NaN (not null) is the trainer's finiteness check, with the global row and column as for .npy files.
    X = data["X"].copy()
    X[3210, 5] = np.nan
    pq.write_table(table_of(X, data["Y"], data["w"]), tmp_path / "nan.parquet", row_group_size=1000)
    with pytest.raises(ValueError, match=r"^X contains nan at row 3210, column 5"):
        outofcore.fit(LinearRegressor(epochs=2), Parquet(tmp_path / "nan.parquet", FEATURES), "t0",
                      chunk_bytes=SMALL_BUDGET)
    weights = data["w"].copy()
    weights[77] = -1.0
    pq.write_table(table_of(data["X"], data["Y"], weights), tmp_path / "negative.parquet")
    with pytest.raises(ValueError, match="non-negative, got -1.0 at row 77"):
        outofcore.fit(LinearRegressor(epochs=2), tmp_path / "negative.parquet", "t0", "w")


def test_a_directory_with_mismatched_schemas_is_refused(data, tmp_path):
    cases = [
        (table_of(data["X"], data["Y"], data["w"], slice(0, 10)).drop_columns(["f2"]), r"lacks column 'f2'"),
        (table_of(data["X"], data["Y"], data["w"], slice(0, 10)).set_column(
            0, "f0", pa.array(np.arange(10), pa.int64())), r"has column 'f0' as int64 where it is double"),
    ]
    for k, (other, message) in enumerate(cases):
        directory = tmp_path / f"mixed{k}"
        directory.mkdir()
        pq.write_table(table_of(data["X"], data["Y"], data["w"], slice(0, 100)), directory / "a.parquet")
        pq.write_table(other, directory / "b.parquet")
        with pytest.raises(ValueError, match=rf"the files' schemas differ: .*b.parquet {message} .*a.parquet"):
            outofcore.fit(LinearRegressor(epochs=1), directory, "t0")
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    (empty / "x.parquet").mkdir()  # a folder named like a file: still no Parquet files
    with pytest.raises(ValueError, match="no Parquet files"):
        outofcore.fit(LinearRegressor(epochs=1), empty, "t0")


# --------------------------------------------------------------------------- command line


def test_linreg_train_streams_a_parquet_dataset(data, tmp_path, capsys):
    model_path, log_path = tmp_path / "m.npz", tmp_path / "log.json"
    assert linreg_cli.main(["train", "--dataset", str(data["dir"]), "--target", "t0,t1", "--features",
                            ",".join(FEATURES), "--weight-column", "w", "--epochs", "15", "--lr", "auto",
                            "--standardize", "--no-progress", "--chunk-mb", "0.04", "--save", str(model_path),
                            "--run-log", str(log_path)]) == 0
    out = capsys.readouterr().out
    assert "(target t0,t1): 5003 x 7 -> 2 float64, streamed in chunks of" in out
    expected = dense_fit(data, {"epochs": 15, "lr": "auto", "standardize": True}, two_outputs=True, weighted=True)
    assert_same_fit(load(model_path), expected)
    assert list(load(model_path).feature_names_in_) == FEATURES
    assert json.loads(log_path.read_text())["target"] == "t0,t1"
    for argv, message in (
            (["--target-file", "y.npy"], "give --dataset data.parquet --target COLUMN"),
            (["--target", "nope"], "y: no column 'nope'"),
            ([], "give --dataset data.parquet --target COLUMN")):
        with pytest.raises(SystemExit):
            linreg_cli.main(["train", "--dataset", str(data["file"]), "--epochs", "1", "--no-progress", *argv])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        linreg_cli.main(["train", "--dataset", "seed-linear", "--weight-column", "w", "--target-file", "y.npy"])
    assert "--features and --weight-column name columns of Parquet data" in capsys.readouterr().err


# --------------------------------------------------------------------------- memory


MEMORY_PROBE = r"""
import json, sys, threading, time
from linreg import LinearRegressor, outofcore, spill

small, big, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
outofcore._spare_core = lambda: True  # read ahead in a background thread, as with a spare core: measured too
spilled, spill_dataset = [], spill.spill_dataset
# The fit makes 3 passes: its first writes the decoded rows to a spill file that the others read (linreg.spill),
# which must stay in the page cache, not in this process's anonymous memory: the spill is part of what is measured.
spill.spill_dataset = lambda *args: spilled.append(spill_dataset(*args)) or spilled[-1]


def anonymous():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("RssAnon"):
                return int(line.split()[1]) * 1024


options = dict(epochs=2, lr=0.01, standardize=True)
# Warm up on a small file of the same schema, several row groups and chunks: compiles (or loads) every kernel and
# starts pyarrow's thread and memory pools, so the measured fit shows only what streaming needs.
outofcore.fit(LinearRegressor(**options), small, "target", chunk_bytes=budget)
peak, done = [0], threading.Event()


def sample():  # anonymous memory (not the page cache the file reads fill), sampled through the fit
    while not done.is_set():
        peak[0] = max(peak[0], anonymous())
        time.sleep(0.001)


before = anonymous()
sampler = threading.Thread(target=sample)
sampler.start()
model = outofcore.fit(LinearRegressor(**options), big, "target", chunk_bytes=budget)
done.set()
sampler.join()
print(json.dumps({"growth": max(peak[0], anonymous()) - before, "coef": model.coef_.tolist(), "spilled": spilled,
                  "history": model.loss_history_.tolist(), "dtype": str(model.coef_.dtype)}))
"""


@pytest.fixture(scope="module")
def big_parquet(tmp_path_factory):
    """1,500,000 x 20 float32 features and their target (126 MB decoded), written with pyarrow's defaults (snappy,
    dictionary pages) in 64Ki-row groups, chunk by chunk from .npy files; and a small twin to warm up on."""
    folder = tmp_path_factory.mktemp("big-parquet")
    paths = {}
    for name, n, seed in (("big", 1_500_000, 1), ("small", 150_000, 2)):
        X_path, y_path = folder / f"{name}_X.npy", folder / f"{name}_y.npy"
        outofcore.write_synthetic(X_path, y_path, n, 20, dtype=np.float32, random_state=seed, chunk_rows=1 << 17)
        X, y = np.load(X_path, mmap_mode="r"), np.load(y_path, mmap_mode="r")
        paths[name] = folder / f"{name}.parquet"
        schema = pa.schema([(f"x{j}", pa.float32()) for j in range(20)] + [("target", pa.float32())])
        with pq.ParquetWriter(paths[name], schema) as writer:
            for start in range(0, n, 1 << 16):
                rows = slice(start, start + (1 << 16))
                writer.write_table(pa.table({**{f"x{j}": np.asarray(X[rows, j]) for j in range(20)},
                                             "target": np.asarray(y[rows])}))
        paths[f"{name}_npy"] = (X_path, y_path)
    return paths


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc for RssAnon")
def test_peak_anonymous_memory_stays_within_the_chunk_budget(big_parquet):
    budget = 8 << 20
    decoded_bytes = 1_500_000 * 21 * 4
    assert decoded_bytes > 15 * budget and big_parquet["big"].stat().st_size > 15 * budget
    result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(big_parquet["small"]), str(big_parquet["big"]),
                             str(budget)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    # The chunk buffers and the decoded record batch (both in the budget), plus what Parquet decodes a page at a
    # time: per column a data page and its dictionary page (pyarrow writes <= 1 MiB each) and the read buffer.
    per_column = 2 * (1 << 20) + (1 << 16)
    assert measured["growth"] <= 1.5 * budget + 21 * per_column, measured
    assert measured["growth"] <= decoded_bytes / 2.5, measured  # far from holding the data
    assert measured["dtype"] == "float32"
    assert measured["spilled"] == [True, True]  # the warm-up fit and the measured one read their spill files
    X_path, y_path = big_parquet["big_npy"]
    expected = outofcore.fit(LinearRegressor(epochs=2, lr=0.01, standardize=True), X_path, y_path,
                             chunk_bytes=8 << 20)
    np.testing.assert_allclose(measured["history"], expected.loss_history_, rtol=1e-12)
    np.testing.assert_allclose(measured["coef"], expected.coef_, rtol=1e-6)


# --------------------------------------------------------------------------- two ranks


WORKER = r"""
import json, sys, warnings
from linreg import LinearRegressor, distributed

config = json.load(open(sys.argv[1]))
distributed.init(timeout=60)
result = {}
for name, options, targets, weight, shards in config["fits"]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = distributed.fit(LinearRegressor(**options), config["path"], targets, weight,
                                chunk_bytes=config["chunk_bytes"], shards=shards)
    result[name] = {"coef": model.coef_.tolist(), "intercept": model.intercept_.tolist(),
                    "history": model.loss_history_.tolist(), "names": list(model.feature_names_in_)}
print(json.dumps(result), flush=True)
"""

DISTRIBUTED_FITS = [
    ("gd-weighted", {"epochs": 20, "lr": "auto", "standardize": True, "momentum": 0.5}, ["t0", "t1"], "w", None),
    ("normal-uneven", {"solver": "normal", "penalty": "l2", "alpha": 0.1}, "t0", None, [[0, 1300], [1300, N_SAMPLES]]),
    ("sgd", {"epochs": 2, "lr": 0.002, "batch_size": 64, "random_state": 5}, "t0", None, None),
]


def test_two_ranks_stream_their_shares_of_a_parquet_directory(data, tmp_path):
    """Each rank reads only its rows' row groups (the .npy path's sharding); both train the single-process model."""
    pytest.importorskip("torch")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"path": str(data["dir"]), "chunk_bytes": SMALL_BUDGET, "fits": DISTRIBUTED_FITS}))
    (tmp_path / "worker.py").write_text(WORKER)
    outputs = run_ranks(tmp_path / "worker.py", config)
    for name, options, targets, weight, _ in DISTRIBUTED_FITS:
        rank0, rank1 = outputs[0][name], outputs[1][name]
        assert rank0 == rank1, name  # identical on every rank
        if options.get("batch_size"):
            assert rank0["names"] == FEATURES + ["t1", "w"]
            assert_sgd_on_the_union_of_local_batches(data, options, rank0)
            continue
        expected = parquet_fit(data, "dir", options, targets=targets, weighted=weight is not None)
        rtol = 1e-10 if options.get("solver") else 1e-12
        np.testing.assert_allclose(rank0["history"], expected.loss_history_, rtol=rtol)
        assert np.abs(np.array(rank0["coef"]) - expected.coef_).max() <= rtol * np.abs(expected.coef_).max(), name
        assert rank0["names"] == list(expected.feature_names_in_)


def assert_sgd_on_the_union_of_local_batches(data, options, fitted):
    """A global batch is rank 0's k-th local batch plus rank 1's, each rank chunking its shard of the Parquet rows
    as ``chunk_rows_for`` says (tests/scale/test_distributed.py's check, on this source's chunking)."""
    torch = pytest.importorskip("torch")
    X = np.column_stack([data["X"], data["Y"][:, 1], data["w"]])  # every column but the target t0
    dataset = outofcore.open_dataset(str(data["dir"]), "t0")
    local = outofcore.local_batch_sizes(options["batch_size"], 2)
    chunk_rows = [outofcore.chunk_rows_for(dataset, SMALL_BUDGET, batch, shuffle=True) for batch in local]
    dataset.close()
    shards = outofcore.even_shards(N_SAMPLES, 2)
    assert chunk_rows[0] < shards[0][1] - shards[0][0]  # several chunks per rank

    def global_batches(epoch):
        per_rank = [outofcore.epoch_batches(options["random_state"], epoch, hi - lo, chunk_rows[rank], local[rank],
                                            rank=rank, lo=lo) for rank, (lo, hi) in enumerate(shards)]
        steps = max(len(batches) for batches in per_rank)
        return [np.concatenate([batches[k] for batches in per_rank if k < len(batches)]) for k in range(steps)]

    W, b, history = torch_reference_fit(X, data["y"][:, None], np.ones((1, 9)), np.ones(1), epochs=options["epochs"],
                                        batches=global_batches,
                                        make_optimizer=lambda w, b: torch.optim.SGD([w, b], lr=options["lr"]))
    assert_close(fitted["history"], history, np.float64, "trajectory", "loss history")
    assert_close(fitted["coef"], W[0], np.float64, "trajectory", "coef_")
    assert_close(np.atleast_1d(fitted["intercept"]), b, np.float64, "trajectory", "intercept_")


def test_torchrun_linreg_train_distributed_reads_parquet(data, tmp_path):
    pytest.importorskip("torch")
    model_path = tmp_path / "model.npz"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "linreg", "train", "--dataset", str(data["dir"]), "--target", "t0", "--weight-column", "w",
               "--features", ",".join(FEATURES), "--distributed", "--epochs", "12", "--lr", "0.01", "--no-progress",
               "--chunk-mb", str(SMALL_BUDGET / 2**20), "--save", str(model_path), "--dist-timeout", "60"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("model written to") == 1 and "on 2 ranks (gloo)" in result.stdout
    expected = parquet_fit(data, "dir", {"epochs": 12, "lr": 0.01}, weighted=True, features=FEATURES)
    assert_same_fit(load(model_path), expected)


# --------------------------------------------------------------------------- the page reader and the reader thread


def write_kind(path, columns, kind):
    """A Parquet file of float ``columns`` (dict name -> array) written the way ``kind`` says."""
    options = {
        "defaults": {},  # snappy, dictionary pages then PLAIN once the dictionary is full, v1 pages
        "required": {},  # the same with not-null fields: pages without definition levels
        "plain": {"compression": "none", "use_dictionary": False},
        "snappy-plain": {"use_dictionary": False},
        "v2-pages": {"data_page_version": "2.0"},
        "v2-uncompressed": {"data_page_version": "2.0", "compression": "none", "use_dictionary": False},
        "uncompressed-dictionary": {"compression": "none", "data_page_size": 2000, "dictionary_pagesize_limit": 3000},
        "v2-small-pages": {"data_page_version": "2.0", "data_page_size": 2000, "dictionary_pagesize_limit": 3000},
        "small-pages": {"data_page_size": 2000, "dictionary_pagesize_limit": 3000, "row_group_size": 1500},
        "zstd": {"compression": "zstd"},  # a codec the page reader refuses: pyarrow reads it
    }[kind]
    table = pa.table(columns)
    if kind == "required":
        table = table.cast(pa.schema([pa.field(n, table.schema.field(n).type, nullable=False) for n in columns]))
    pq.write_table(table, path, row_group_size=options.pop("row_group_size", 2000), **options)


PAGE_KINDS = ["defaults", "plain", "snappy-plain", "v2-pages", "v2-uncompressed", "small-pages", "required",
              "uncompressed-dictionary", "v2-small-pages"]


def kind_columns(n, dtype, repeats):
    """Float columns: distinct values, or a few values repeated (all pages dictionary-encoded)."""
    rng = np.random.default_rng(11)
    columns = {f"c{j}": rng.standard_normal(n).astype(dtype) for j in range(5)}
    if repeats:
        columns = {name: np.round(values * 2).astype(dtype) for name, values in columns.items()}
    columns["t"] = rng.standard_normal(n).astype(dtype)
    return columns


def read_all_ways(path, ranges, page_reader, monkeypatch):
    from linreg import parquet

    monkeypatch.setattr(parquet, "PAGE_READER", page_reader)
    dataset = outofcore.open_dataset(path, "t")
    rows = []
    for start, stop in ranges:
        X, Y = np.empty((stop - start, dataset.n_features), dataset.dtype), np.empty((stop - start, 1), dataset.dtype)
        dataset.X.read(start, stop, X)
        dataset.Y.read(start, stop, Y)
        rows.append((X, Y))
    refused = dataset.X._pyarrow_units
    dataset.close()
    return rows, refused


@pytest.mark.parametrize("repeats", [False, True], ids=["distinct", "repeated"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", PAGE_KINDS + ["zstd"])
def test_the_page_reader_reads_what_pyarrow_decodes(tmp_path, monkeypatch, kind, dtype, repeats):
    """Every file kind the page reader takes (and zstd, which it leaves to pyarrow): the same rows, bit for bit,
    as pyarrow's decode, at offsets inside pages, across pages, row groups and dictionary/PLAIN boundaries."""
    n = 7001
    columns = kind_columns(n, dtype, repeats)
    write_kind(tmp_path / "f.parquet", columns, kind)
    rng = np.random.default_rng(3)
    ranges = [(0, n), (0, 1), (n - 1, n), (1999, 2001), (123, 4567), (4000, 2000 + 4000)]
    ranges += [tuple(sorted(rng.choice(n + 1, 2, replace=False))) for _ in range(20)]
    mine, refused = read_all_ways(tmp_path / "f.parquet", ranges, True, monkeypatch)
    theirs, _ = read_all_ways(tmp_path / "f.parquet", ranges, False, monkeypatch)
    assert (len(refused) > 0) == (kind == "zstd"), refused
    stored = np.column_stack([columns[f"c{j}"] for j in range(5)])
    for (start, stop), (X, Y), (X_ref, Y_ref) in zip(ranges, mine, theirs, strict=True):
        np.testing.assert_array_equal(X_ref, stored[start:stop])
        assert X.tobytes() == X_ref.tobytes() and Y.tobytes() == Y_ref.tobytes()


def test_the_page_reader_leaves_nulls_and_other_types_to_pyarrow(tmp_path, monkeypatch):
    """A nullable column with nulls, an int column, a float16 column: refused by the page reader (from the footer),
    read by pyarrow, the same rows; the null still named by row."""
    n = 3000
    rng = np.random.default_rng(1)
    x = rng.standard_normal(n)
    table = pa.table({"a": x, "i": np.arange(n, dtype=np.int32), "h": x.astype(np.float16), "t": x})
    pq.write_table(table, tmp_path / "mixed.parquet", row_group_size=1000)
    rows, refused = read_all_ways(tmp_path / "mixed.parquet", [(0, n), (999, 2001)], True, monkeypatch)
    assert refused == {0, 1, 2}
    np.testing.assert_array_equal(rows[0][0], np.column_stack([x, np.arange(n), x.astype(np.float16)]))
    with_null = pa.table({"a": pa.array(list(x[:1500]) + [None] + list(x[1501:])), "t": x})
    pq.write_table(with_null, tmp_path / "null.parquet", row_group_size=1000)
    dataset = outofcore.open_dataset(tmp_path / "null.parquet", "t")
    first = np.empty((1000, 1))
    dataset.X.read(0, 1000, first)  # the group without the null: footer null count 0, the page reader's
    np.testing.assert_array_equal(first[:, 0], x[:1000])
    with pytest.raises(ValueError, match="column 'a' has a null .* at row 1500"):
        dataset.X.read(1000, 2000, np.empty((1000, 1)))
    dataset.close()


def test_the_dictionary_decoder_and_page_header_parser_refuse_bad_input():
    """kernels.cpu_columns: RLE / bit-packed runs decoded at any skip; truncated streams and indices beyond the
    dictionary return False (the caller then reads the page with pyarrow); a truncated header asks for more."""
    from linreg.kernels import cpu_columns

    dictionary = np.arange(10, dtype=np.float32) * 1.5
    # bit width 4: an RLE run of 3 x index 7, then one bit-packed group of 8 indices 0..7
    packed = bytes([(k + 1) << 4 | k for k in range(0, 8, 2)])
    stream = np.frombuffer(bytes([4, 3 << 1, 7, 1 << 1 | 1]) + packed, np.uint8)
    expected = dictionary[[7, 7, 7, 0, 1, 2, 3, 4, 5, 6, 7]]
    for skip in range(11):
        out = np.empty(11 - skip, np.float32)
        assert cpu_columns.dictionary_decode(stream, 11, skip, dictionary, out)
        np.testing.assert_array_equal(out, expected[skip:])
    assert not cpu_columns.dictionary_decode(stream[:5], 11, 0, dictionary, np.empty(11, np.float32))
    assert not cpu_columns.dictionary_decode(stream, 11, 0, dictionary[:5], np.empty(11, np.float32))
    assert not cpu_columns.dictionary_decode(np.frombuffer(bytes([40, 2, 0]), np.uint8), 1, 0, dictionary,
                                             np.empty(1, np.float32))
    fields = np.empty(cpu_columns.H_SIZE, np.int64)
    header = np.frombuffer(bytes.fromhex("1500159001159001" "2c1528150015061506" "0000"), np.uint8)
    assert cpu_columns.page_header(header, fields) == 0
    assert fields[cpu_columns.H_LENGTH] == header.shape[0] and fields[cpu_columns.H_NUM_VALUES] == 20
    assert fields[cpu_columns.H_COMPRESSED] == 72 and fields[cpu_columns.H_ENCODING] == 0
    assert all(cpu_columns.page_header(header[:k], fields) == 1 for k in range(header.shape[0]))
    assert cpu_columns.page_header(np.frombuffer(bytes([0x1B, 0, 0]), np.uint8), fields) == 2  # a map


def reader_threads():
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("linreg-parquet")]


BIT_FITS = [{"epochs": 4, "lr": 0.01, "momentum": 0.5},
            {"epochs": 2, "lr": 0.002, "batch_size": 64, "random_state": 3},
            {"epochs": 3, "lr": "auto", "standardize": True, "batch_size": 100, "shuffle": False}]


@pytest.mark.parametrize("options", BIT_FITS, ids=["gd", "sgd-shuffled", "sgd-in-order"])
def test_the_reader_thread_page_reader_and_pyarrow_give_the_same_bits(data, options, monkeypatch):
    """The overlapped reader (background fill), the serial one and pyarrow's record batches: the same chunks and
    the same bits; and with 1 thread as with 2."""
    import threading

    import numba

    from linreg import parquet

    original_fill, background = parquet.ParquetColumns._fill, []

    def fill(self, start, stop):
        background.append(threading.current_thread() is not threading.main_thread())
        return original_fill(self, start, stop)

    monkeypatch.setattr(parquet.ParquetColumns, "_fill", fill)
    monkeypatch.setattr(parquet, "SPILL", False)  # every pass decodes: the readers compared on every epoch

    def fit(prefetch, page_reader, threads=None):
        monkeypatch.setattr(parquet, "PREFETCH", prefetch)
        monkeypatch.setattr(parquet, "PAGE_READER", page_reader)
        # Read ahead beside the full-batch kernels too (by default only where a core is spare).
        monkeypatch.setattr(outofcore, "_spare_core", lambda: prefetch)
        saved = numba.get_num_threads()
        numba.set_num_threads(threads or saved)
        try:
            model = parquet_fit(data, "dir", options, targets=["t0", "t1"], weighted=True)
        finally:
            numba.set_num_threads(saved)
        return np.concatenate([model.coef_.ravel(), model.intercept_.ravel(), model.loss_history_]).tobytes()

    overlapped = fit(True, True)
    assert background and all(background)  # every fill ran in the reader thread
    background.clear()
    assert overlapped == fit(False, True) == fit(True, False) == fit(False, False)
    if numba.config.NUMBA_NUM_THREADS >= 2:
        assert fit(True, True, threads=1) == fit(True, True, threads=2)
    assert not reader_threads()


def test_an_error_in_the_reader_thread_surfaces_in_the_caller_and_leaves_no_thread(data, tmp_path, monkeypatch):
    """A page that fails to read in the background (an injected OSError), a file corrupted after it was opened
    (its pages overwritten): the fit raises in the calling thread, and no reader thread is left running."""
    import threading

    from linreg import parquet_pages

    original = parquet_pages.ColumnChunkPages.read
    failed = []

    def read(self, first, out, buffers):
        if threading.current_thread() is not threading.main_thread():
            failed.append(first)
            raise OSError("injected: the disk went away")
        return original(self, first, out, buffers)

    monkeypatch.setattr(parquet_pages.ColumnChunkPages, "read", read)
    with pytest.raises(OSError, match="injected"):  # mini-batches: always read ahead
        parquet_fit(data, "file", {"epochs": 3, "lr": 0.002, "batch_size": 64})
    assert failed and not reader_threads()
    monkeypatch.setattr(parquet_pages.ColumnChunkPages, "read", original)

    path = tmp_path / "corrupt.parquet"
    path.write_bytes(data["file"].read_bytes())
    dataset = outofcore.open_dataset(path, "t0")  # footer read: now the pages go bad
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.seek(size // 3)
        handle.write(b"\xff" * (size // 3))
    reader = outofcore.ShardReader(dataset, 0, N_SAMPLES, 500)
    with pytest.raises(Exception) as raised:
        for k in range(reader.n_chunks):
            reader.read(k)
            reader.prefetch(k + 1)
    assert not isinstance(raised.value, AssertionError)
    dataset.close()
    assert not reader_threads()


def test_ctrl_c_during_a_read_stops_the_fit_cleanly(data, monkeypatch):
    """Ctrl-C while the thread fills the next chunk: a first one (SIGINT) ends the fit after its block of epochs with
    the engine's KeyboardInterrupt, the model keeping them; one raised inside the read (a second Ctrl-C lands
    anywhere) propagates. Either way the thread is waited for and gone, and the files are closed."""
    import signal

    from linreg import parquet

    original = parquet.ParquetColumns._transpose
    calls, how = [0], ["signal"]
    sources = []

    def transpose(self, n, out):
        calls[0] += 1
        sources.append(self)
        if calls[0] == 40:  # in the second epoch (19 chunks, X and y each)
            if how[0] == "signal":
                signal.raise_signal(signal.SIGINT)
            else:
                raise KeyboardInterrupt
        return original(self, n, out)

    monkeypatch.setattr(parquet.ParquetColumns, "_transpose", transpose)
    monkeypatch.setattr(parquet, "SPILL", False)  # the second epoch decodes too (no spill file to read it from)
    model = LinearRegressor(epochs=5, lr=0.002, batch_size=64)  # mini-batches: always read ahead
    with pytest.raises(KeyboardInterrupt, match="fit interrupted after epoch"):
        outofcore.fit(model, data["file"], "t0", chunk_bytes=SMALL_BUDGET)
    assert hasattr(model, "coef_") and len(model.loss_history_) >= 2
    assert not reader_threads() and all(s._fd is None and s._executor is None for s in sources)
    calls[0], how[0] = 0, "raise"
    with pytest.raises(KeyboardInterrupt):
        outofcore.fit(LinearRegressor(epochs=5, lr=0.002, batch_size=64), data["file"], "t0",
                      chunk_bytes=SMALL_BUDGET)
    assert not reader_threads() and all(s._fd is None and s._executor is None for s in sources)
