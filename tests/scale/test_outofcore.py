"""Out-of-core training (linreg.outofcore): streamed fits equal in-memory fits, memory stays bounded, bad data is named.

The chunk budget is made small (a few chunks of a few hundred rows), so every
fit here crosses many chunk boundaries. Full-batch GD over chunks differs from
the in-memory pass only in the order the chunks' partial sums are added
(~1e-16 relative per step, measured ~1e-15 on whole trajectories): asserted at
1e-12.
"""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from helpers import GD_OPTIONS, assert_same_fit, torch_reference_fit

from linreg import DivergenceError, LinearRegressor, outofcore
from linreg.kernels import cpu
from linreg.testing import assert_close

#: A budget of ~40 KB: ~500 rows of the 7-feature, 2-output float64 problem below, so ~10 chunks.
SMALL_BUDGET = 40_000
N_SAMPLES = 5003  # not a multiple of any chunk or batch size used here


def noisy_problem(n_samples, n_features, n_outputs, seed):
    """Offset, unevenly scaled columns (so standardisation matters) and noisy linear targets, float64."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features)) * rng.uniform(0.5, 4, n_features) + 3.0
    W = rng.standard_normal((n_outputs, n_features))
    return X, X @ W.T + rng.standard_normal(n_outputs) + 0.1 * rng.standard_normal((n_samples, n_outputs))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """X (offset and scaled columns, 2 outputs), Y, a 1-D y and positive weights, as .npy files and arrays."""
    directory = tmp_path_factory.mktemp("outofcore")
    X, Y = noisy_problem(n_samples=N_SAMPLES, n_features=7, n_outputs=2, seed=4)
    weights = np.random.default_rng(5).uniform(0.5, 2.0, N_SAMPLES)
    arrays = {"X": X, "Y": Y, "y": Y[:, 0].copy(), "w": weights}
    paths = {}
    for name, array in arrays.items():
        paths[name] = directory / f"{name}.npy"
        np.save(paths[name], array)
    return arrays, paths


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("options", GD_OPTIONS)
def test_full_batch_gd_over_chunks_equals_the_in_memory_fit(files, options, weighted):
    arrays, paths = files
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the tol runs: the same on both sides
        expected = LinearRegressor(**options).fit(arrays["X"], arrays["Y"],
                                                  sample_weight=arrays["w"] if weighted else None)
        model = outofcore.fit(LinearRegressor(**options), paths["X"], paths["Y"],
                              paths["w"] if weighted else None, chunk_bytes=SMALL_BUDGET)
    assert_same_fit(model, expected)


def test_the_budget_makes_many_chunks(files):
    """The equality tests above are meaningful only if the data really crosses chunk boundaries."""
    data = outofcore.open_dataset(files[1]["X"], files[1]["Y"], files[1]["w"])
    rows = outofcore.chunk_rows_for(data, SMALL_BUDGET)
    data.close()
    assert 5 <= N_SAMPLES / rows <= 50 and N_SAMPLES % rows


def test_chunk_budget_module_constant_is_the_default(files, monkeypatch):
    arrays, paths = files
    monkeypatch.setattr(outofcore, "CHUNK_BYTES", SMALL_BUDGET)
    reads = []
    original = outofcore.ShardReader.read
    monkeypatch.setattr(outofcore.ShardReader, "read", lambda self, k: reads.append(k) or original(self, k))
    model = outofcore.fit(LinearRegressor(epochs=3, lr=0.01), paths["X"], paths["y"])
    assert_same_fit(model, LinearRegressor(epochs=3, lr=0.01).fit(arrays["X"], arrays["y"]))
    n_chunks = len(reads) // 3
    assert n_chunks >= 5 and reads == list(range(n_chunks)) * 3
    assert np.ndim(model.coef_) == 1 and np.ndim(model.intercept_) == 0  # 1-D y, as in memory


def test_warm_start_progress_and_randn_init_behave_as_in_memory(files, capsys):
    arrays, paths = files
    options = {"epochs": 6, "lr": 0.01, "init": "randn", "random_state": 3, "warm_start": True}
    streamed, in_memory = LinearRegressor(**options), LinearRegressor(**options)
    for _ in range(2):  # the second fit continues from the first one's coef_ and intercept_
        outofcore.fit(streamed, paths["X"], paths["Y"], chunk_bytes=SMALL_BUDGET)
        in_memory.fit(arrays["X"], arrays["Y"])
        assert_same_fit(streamed, in_memory)
    with_bar = outofcore.fit(LinearRegressor(epochs=6, lr=0.01, progress=True), paths["X"], paths["Y"],
                             chunk_bytes=SMALL_BUDGET)
    assert "6/6" in capsys.readouterr().err
    assert_same_fit(with_bar, LinearRegressor(epochs=6, lr=0.01).fit(arrays["X"], arrays["Y"]))


@pytest.mark.parametrize("options", [
    {"solver": "normal"},
    {"solver": "normal", "standardize": True, "penalty": "l2", "alpha": 0.1},
    {"solver": "gram", "epochs": 60, "lr": "auto"},
    {"solver": "gram", "epochs": 60, "lr": "auto", "standardize": True, "momentum": 0.5},
], ids=["normal", "normal-standardize-ridge", "gram-auto", "gram-standardize-momentum"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_exact_and_gram_solvers_sum_chunk_statistics(files, options, weighted):
    arrays, paths = files
    weights = (arrays["w"], paths["w"]) if weighted else (None, None)
    expected = LinearRegressor(**options).fit(arrays["X"], arrays["Y"], sample_weight=weights[0])
    model = outofcore.fit(LinearRegressor(**options), paths["X"], paths["Y"], weights[1], chunk_bytes=SMALL_BUDGET)
    # The Gram statistics are sums in another order (~1e-16 relative). Both solvers compute the loss as
    # theta'G theta - 2 theta'C + yy, which cancels to ~1e-3 of yy on this offset data, so each side's loss
    # carries ~1e-13 relative error (measured differences up to 4e-12); the solve amplifies the statistics'
    # rounding by the scaled system's condition number. 1e-10 bounds both with margin.
    assert_same_fit(model, expected, rtol=1e-10)


def test_minibatches_in_order_are_the_in_memory_batches(files):
    """shuffle=False: chunks are a multiple of the batch, so the batches are exactly the in-memory ones."""
    arrays, paths = files
    options = {"epochs": 4, "lr": 0.002, "batch_size": 96, "shuffle": False, "momentum": 0.5}
    for weights in (None, "w"):
        expected = LinearRegressor(**options).fit(arrays["X"], arrays["Y"],
                                                  sample_weight=arrays[weights] if weights else None)
        model = outofcore.fit(LinearRegressor(**options), paths["X"], paths["Y"], paths[weights] if weights else None,
                              chunk_bytes=SMALL_BUDGET)
        assert_same_fit(model, expected)


def test_shuffled_minibatches_follow_epoch_batches(files):
    """Shuffled out of core: the trajectory equals torch.optim.SGD fed the batches ``epoch_batches`` lists."""
    torch = pytest.importorskip("torch")
    arrays, paths = files
    batch_size, epochs, lr, seed = 64, 3, 0.002, 11
    model = outofcore.fit(LinearRegressor(epochs=epochs, lr=lr, batch_size=batch_size, random_state=seed),
                          paths["X"], paths["Y"], chunk_bytes=SMALL_BUDGET)
    data = outofcore.open_dataset(paths["X"], paths["Y"])
    chunk_rows = outofcore.chunk_rows_for(data, SMALL_BUDGET, batch_size, shuffle=True)
    data.close()

    def batches(epoch):
        return outofcore.epoch_batches(seed, epoch, N_SAMPLES, chunk_rows, batch_size)

    W, b, history = torch_reference_fit(arrays["X"], arrays["Y"], np.ones((2, 7)), np.ones(2), epochs=epochs,
                                        make_optimizer=lambda w, b: torch.optim.SGD([w, b], lr=lr), batches=batches)
    assert_close(model.loss_history_, history, np.float64, "trajectory", "loss history")
    assert_close(model.coef_, W, np.float64, "trajectory", "coef_")
    assert_close(model.intercept_, b, np.float64, "trajectory", "intercept_")

    # What the shuffle promises: each row once per epoch, a batch within one chunk, a new order each epoch.
    first, second = batches(0), batches(1)
    for epoch_batches in (first, second):
        assert sorted(np.concatenate(epoch_batches).tolist()) == list(range(N_SAMPLES))
        assert all(len(set((rows // chunk_rows).tolist())) == 1 for rows in epoch_batches)
        assert sum(len(rows) < batch_size for rows in epoch_batches) == 1  # only the file's last chunk's tail
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))
    chunk_sequence = list(dict.fromkeys(int(rows[0] // chunk_rows) for rows in first))
    assert chunk_sequence != sorted(chunk_sequence)  # the chunks themselves are visited in a shuffled order


def test_minibatches_match_the_in_memory_sgd_shape_of_history(files):
    """A shuffled out-of-core SGD fit converges like the in-memory one (different batches, same problem)."""
    arrays, paths = files
    options = {"epochs": 10, "lr": 0.01, "batch_size": 32, "random_state": 0, "standardize": True}
    streamed = outofcore.fit(LinearRegressor(**options), paths["X"], paths["Y"], chunk_bytes=SMALL_BUDGET)
    in_memory = LinearRegressor(**options).fit(arrays["X"], arrays["Y"])
    exact = LinearRegressor(solver="normal").fit(arrays["X"], arrays["Y"])
    for model in (streamed, in_memory):  # from a loss of ~300 to within 5% of the least-squares optimum
        assert model.loss_history_[0] > 100 and model.loss_history_[-1] < 1.05 * exact.loss_history_[0]
    assert not np.array_equal(streamed.coef_, in_memory.coef_)  # the batches differ, as documented


def test_float32_stays_float32_and_the_kernels_see_float32(files, tmp_path, monkeypatch):
    arrays, _ = files
    X32, Y32 = arrays["X"].astype(np.float32), arrays["Y"].astype(np.float32)
    np.save(tmp_path / "X32.npy", X32)
    np.save(tmp_path / "Y32.npy", Y32)
    seen = []
    original = cpu._loss_grad

    def spy(X, *args):
        seen.append(X.dtype)
        return original(X, *args)

    monkeypatch.setattr(cpu, "_loss_grad", spy)
    options = {"epochs": 20, "lr": 0.01, "momentum": 0.5}  # the engine path in memory: float64 master parameters
    model = outofcore.fit(LinearRegressor(**options), tmp_path / "X32.npy", tmp_path / "Y32.npy",
                          chunk_bytes=SMALL_BUDGET // 2)
    monkeypatch.undo()
    assert seen and set(seen) == {np.dtype(np.float32)}
    assert model.coef_.dtype == np.float32 and model.intercept_.dtype == np.float32
    expected = LinearRegressor(**options).fit(X32, Y32)
    # Same float32 data, float64 accumulation and float64 master parameters on both sides: only the chunks'
    # summation order differs, and the parameters are rounded to float32 at the end.
    assert_same_fit(model, expected, rtol=1e-6)


def test_stored_dtypes_follow_the_in_memory_rules(files, tmp_path):
    arrays, _ = files
    X_int = np.round(arrays["X"] * 10).astype(np.int32)
    Y_big_endian = arrays["Y"].astype(">f4")
    np.save(tmp_path / "Xi.npy", X_int)
    np.save(tmp_path / "Yb.npy", Y_big_endian)
    np.save(tmp_path / "Y64.npy", arrays["Y"])
    options = {"epochs": 10, "lr": 1e-4, "penalty": "l2"}
    for y_name, y_array in (("Yb.npy", Y_big_endian), ("Y64.npy", arrays["Y"])):
        model = outofcore.fit(LinearRegressor(**options), tmp_path / "Xi.npy", tmp_path / y_name,
                              chunk_bytes=SMALL_BUDGET)
        expected = LinearRegressor(**options).fit(X_int, y_array.astype(y_array.dtype.newbyteorder("=")))
        assert model.coef_.dtype == expected.coef_.dtype == (np.float32 if y_name == "Yb.npy" else np.float64)
        assert_same_fit(model, expected, rtol=1e-6 if y_name == "Yb.npy" else 1e-12)


@pytest.mark.parametrize("kind", ["memmap", "fortran-memmap", "fortran-file", "array-y", "copy-on-write"])
def test_memmaps_and_arrays_stream_like_files(files, tmp_path, kind):
    arrays, paths = files
    options = {"epochs": 8, "lr": 0.01, "standardize": True}
    expected = outofcore.fit(LinearRegressor(**options), paths["X"], paths["Y"], chunk_bytes=SMALL_BUDGET)
    X, Y = np.load(paths["X"], mmap_mode="r"), np.load(paths["Y"], mmap_mode="r")
    if kind.startswith("fortran"):
        np.save(tmp_path / "XF.npy", np.asfortranarray(arrays["X"]))
        X = np.load(tmp_path / "XF.npy", mmap_mode="r") if kind == "fortran-memmap" else tmp_path / "XF.npy"
    elif kind == "array-y":
        Y = arrays["Y"]
    elif kind == "copy-on-write":
        X = np.load(paths["X"], mmap_mode="c")
        X[0, 0] += 1.0  # a private change the reader must see (its pages must not be dropped)
    assert outofcore.is_out_of_core(X, Y)
    model = outofcore.fit(LinearRegressor(**options), X, Y, chunk_bytes=SMALL_BUDGET)
    if kind == "copy-on-write":
        changed = arrays["X"].copy()
        changed[0, 0] += 1.0
        expected = LinearRegressor(**options).fit(changed, arrays["Y"])
        assert X[0, 0] == changed[0, 0]
        assert_same_fit(model, expected)
    else:
        np.testing.assert_array_equal(model.coef_, expected.coef_)
        np.testing.assert_array_equal(model.loss_history_, expected.loss_history_)


def test_is_out_of_core_recognises_paths_and_memmaps(files):
    arrays, paths = files
    assert outofcore.is_out_of_core(paths["X"], arrays["Y"])
    assert outofcore.is_out_of_core(str(paths["X"]), None)
    assert outofcore.is_out_of_core(arrays["X"], arrays["Y"], np.load(paths["w"], mmap_mode="r"))
    assert not outofcore.is_out_of_core(arrays["X"], arrays["Y"], None)
    assert not outofcore.is_out_of_core([[1.0]], [1.0])


@pytest.mark.parametrize("target, row, column", [("X", 4321, 3), ("Y", 2600, 1), ("X", 0, 0), ("X", N_SAMPLES - 1, 6)])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_value_is_named_by_its_global_row(files, tmp_path, target, row, column, bad):
    arrays, paths = files
    damaged = arrays[target].copy()
    damaged[row, column] = bad
    np.save(tmp_path / "bad.npy", damaged)
    X = tmp_path / "bad.npy" if target == "X" else paths["X"]
    Y = tmp_path / "bad.npy" if target == "Y" else paths["Y"]
    model = LinearRegressor(epochs=2, lr=0.01)
    name = "X" if target == "X" else "y"
    with pytest.raises(ValueError, match=rf"^{name} contains {bad} at row {row}, column {column}; remove or impute"):
        outofcore.fit(model, X, Y, chunk_bytes=SMALL_BUDGET)
    assert not hasattr(model, "coef_")


def test_bad_weights_are_refused_before_any_work(files, tmp_path):
    arrays, paths = files
    for values, message in (({1234: -1.0}, "non-negative, got -1.0 at row 1234"),
                            ({77: np.nan}, "finite and non-negative, got nan at row 77"),
                            (None, "sums to 0")):
        weights = np.zeros(N_SAMPLES) if values is None else arrays["w"].copy()
        for position, value in (values or {}).items():
            weights[position] = value
        np.save(tmp_path / "w.npy", weights)
        with pytest.raises(ValueError, match=message):
            outofcore.fit(LinearRegressor(epochs=2), paths["X"], paths["Y"], tmp_path / "w.npy")


def test_bad_files_and_shapes_are_named(files, tmp_path):
    arrays, paths = files
    np.save(tmp_path / "short.npy", arrays["Y"][:-1])
    np.save(tmp_path / "flat.npy", arrays["X"][:, 0])
    np.save(tmp_path / "complex.npy", arrays["X"].astype(np.complex128))
    np.save(tmp_path / "empty.npy", np.empty((0, 7)))
    (tmp_path / "table.csv").write_text("1,2\n")
    truncated = paths["X"].read_bytes()[:-100]
    (tmp_path / "truncated.npy").write_bytes(truncated)
    cases = [
        ((paths["X"], tmp_path / "short.npy"), ValueError, r"same number of samples, got X \(5003, 7\) and y"),
        ((tmp_path / "flat.npy", paths["y"]), ValueError, r"X must be 2-D \(n_samples, n_features\), got shape"),
        ((tmp_path / "complex.npy", paths["y"]), TypeError, "X must hold numbers .* got dtype complex128"),
        ((tmp_path / "empty.npy", tmp_path / "empty.npy"), ValueError, "X must have at least 1 sample"),
        ((tmp_path / "table.csv", paths["y"]), ValueError, "must be a .npy file"),
        ((tmp_path / "missing.npy", paths["y"]), FileNotFoundError, "X: no such file"),
        ((tmp_path / "truncated.npy", paths["y"]), ValueError, "is truncated: its header promises"),
        ((paths["X"], paths["y"], tmp_path / "short.npy"), ValueError, r"sample_weight must have shape \(5003,\)"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            outofcore.fit(LinearRegressor(epochs=1), *args)


def test_options_that_cannot_stream_raise(files):
    _, paths = files
    with pytest.raises(ValueError, match="early_stopping is not supported out of core"):
        outofcore.fit(LinearRegressor(early_stopping=True, tol=1e-3), paths["X"], paths["y"])
    with pytest.raises(ValueError, match="backend='cpu'"):
        outofcore.fit(LinearRegressor(backend="torch"), paths["X"], paths["y"])
    with pytest.raises(ValueError, match="chunk_bytes must be > 0"):
        outofcore.fit(LinearRegressor(), paths["X"], paths["y"], chunk_bytes=0)


def test_divergence_keeps_the_last_finite_parameters_as_in_memory(files):
    arrays, paths = files
    options = {"epochs": 50, "lr": 10.0}
    with pytest.raises(DivergenceError) as in_memory_error:
        expected = LinearRegressor(**options)
        expected.fit(arrays["X"], arrays["Y"], sample_weight=arrays["w"])
    model = LinearRegressor(**options)
    with pytest.raises(DivergenceError) as streamed_error:
        outofcore.fit(model, paths["X"], paths["Y"], paths["w"], chunk_bytes=SMALL_BUDGET)
    assert str(streamed_error.value).split(";")[0] == str(in_memory_error.value).split(";")[0]
    assert_same_fit(model, expected)
    assert np.isfinite(model.coef_).all()


def test_write_npy_and_write_synthetic_write_what_numpy_reads(tmp_path):
    W, b = outofcore.write_synthetic(tmp_path / "X.npy", tmp_path / "y.npy", 1000, 3, n_outputs=2,
                                     dtype=np.float32, chunk_rows=300, noise=0.0)
    X, Y = np.load(tmp_path / "X.npy"), np.load(tmp_path / "y.npy")
    assert X.shape == (1000, 3) and Y.shape == (1000, 2) and X.dtype == Y.dtype == np.float32
    np.testing.assert_allclose(Y, X.astype(np.float64) @ W.T + b, rtol=1e-5, atol=1e-5)
    again = tmp_path / "again.npy"
    outofcore.write_synthetic(again, tmp_path / "y2.npy", 1000, 3, n_outputs=2, dtype=np.float32, chunk_rows=300,
                              noise=0.0)
    assert again.read_bytes() == (tmp_path / "X.npy").read_bytes()  # reproducible, chunk by chunk
    with pytest.raises(ValueError, match="held 2 rows, the shape promised 3"):
        outofcore.write_npy(tmp_path / "z.npy", (3, 1), np.float64, iter([np.zeros((2, 1))]))


# --------------------------------------------------------------------------- memory


MEMORY_PROBE = r"""
import json, sys, time, tracemalloc
import numpy as np
from linreg import LinearRegressor, outofcore

small_X, small_y, big_X, big_y, budget, kind = sys.argv[1:7]
budget = int(budget)


def status(key):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key):
                return int(line.split()[1]) * 1024


def source(path):
    return np.load(path, mmap_mode="r") if kind == "memmap" else path


options = dict(epochs=2, lr=0.01, standardize=True)
# Warm up on a small file of the same dtypes: compiles (or loads) every kernel, so the measured fit allocates
# only what streaming needs.
outofcore.fit(LinearRegressor(**options), source(small_X), source(small_y), chunk_bytes=budget)
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset VmHWM (the peak resident set) to the current resident set
before = status("VmRSS")
tracemalloc.start()
model = outofcore.fit(LinearRegressor(**options), source(big_X), source(big_y), chunk_bytes=budget)
traced_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
resident_growth = status("VmHWM") - before
result = {"resident_growth": resident_growth, "traced_peak": traced_peak, "coef": model.coef_.tolist(),
          "history": model.loss_history_.tolist(), "dtype": str(model.coef_.dtype)}
if kind == "path":  # the same fit in memory, for the result and to show what loading would have cost
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    before = status("VmRSS")
    X, y = np.load(big_X), np.load(big_y)
    expected = LinearRegressor(**options).fit(X, y)
    result["in_memory_growth"] = status("VmHWM") - before
    result["expected_coef"] = expected.coef_.tolist()
    result["expected_history"] = expected.loss_history_.tolist()
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def big_files(tmp_path_factory):
    """~120 MB of float32 features (1.5M x 20) and their targets, written chunk by chunk; and a small twin."""
    directory = tmp_path_factory.mktemp("big")
    paths = {name: directory / f"{name}.npy" for name in ("X", "y", "small_X", "small_y")}
    outofcore.write_synthetic(paths["X"], paths["y"], 1_500_000, 20, dtype=np.float32, random_state=1,
                              chunk_rows=1 << 17)
    outofcore.write_synthetic(paths["small_X"], paths["small_y"], 20_000, 20, dtype=np.float32, random_state=2)
    return paths


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc to reset VmHWM")
@pytest.mark.parametrize("kind", ["path", "memmap"])
def test_peak_memory_stays_within_the_chunk_budget(big_files, kind):
    budget = 4 << 20
    file_bytes = big_files["X"].stat().st_size + big_files["y"].stat().st_size
    assert file_bytes > 25 * budget
    result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(big_files["small_X"]),
                             str(big_files["small_y"]), str(big_files["X"]), str(big_files["y"]), str(budget), kind],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    # Python-side allocations: the chunk buffers (the budget) plus small per-chunk scratch.
    assert measured["traced_peak"] <= 1.25 * budget, measured
    # Resident set: the buffers, plus for a memmap the pages of the chunk being copied (dropped after each copy).
    assert measured["resident_growth"] <= (1.5 if kind == "path" else 3.5) * budget, measured
    assert measured["dtype"] == "float32"
    if kind == "path":
        assert measured["in_memory_growth"] >= 0.9 * file_bytes  # what loading the data whole costs
        np.testing.assert_allclose(measured["history"], measured["expected_history"], rtol=1e-12)
        np.testing.assert_allclose(measured["coef"], measured["expected_coef"], rtol=1e-6)


def test_estimator_fit_streams_paths_and_memmaps(tmp_path):
    """LinearRegressor.fit dispatches .npy paths and np.memmap inputs to the out-of-core fit."""
    outofcore.write_synthetic(tmp_path / "X.npy", tmp_path / "y.npy", 3000, 4, random_state=1)
    options = {"epochs": 10, "lr": "auto", "standardize": True}
    expected = LinearRegressor(**options).fit(np.load(tmp_path / "X.npy"), np.load(tmp_path / "y.npy"))
    for X, y in ((tmp_path / "X.npy", str(tmp_path / "y.npy")),
                 (np.load(tmp_path / "X.npy", mmap_mode="r"), np.load(tmp_path / "y.npy"))):
        np.testing.assert_allclose(LinearRegressor(**options).fit(X, y).coef_, expected.coef_, rtol=1e-12)
    with pytest.raises(ValueError, match="resume=True needs in-memory data"):
        LinearRegressor(checkpoint_path=str(tmp_path / "c.npz")).fit(tmp_path / "X.npy", tmp_path / "y.npy",
                                                                     resume=True)
