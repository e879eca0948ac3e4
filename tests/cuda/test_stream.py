"""backend="cuda" out of core (linreg.cuda_stream): chunks streamed to the device, the sums of the CPU streamed fit.

Every fit here is compared with the same streamed fit on backend="cpu" (the same chunks, chunk and row orders,
the same Stepper): same stop reason and n_iter, parameters and histories within 1e-6 relative (float64), as
tests/cuda/test_engine.py. The chunk budget makes 37 rows into 5 chunks of 8 (the last: 5), each 2 blocks of
the patched small grid, so both buffers, the chunk tail and several blocks per chunk run (a shuffled mini-batch
run's rows also hold their order: 10 chunks of 4 at the same budget).
"""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import run_ranks
from test_engine import assert_rel

from linreg import LinearRegressor, outofcore
from linreg.cuda_stream import DeviceChunks, DeviceStreamed, device_for_rank

N_SAMPLES, N_FEATURES, N_OUTPUTS = 37, 3, 2
#: 43 bytes a row for float64 (3 + 2 values, the 3-byte finite mask): 8 rows a chunk, 5 chunks.
CHUNK_BYTES = 8 * 43
#: Weighted rows take 8 bytes more (51): the same 8 rows a chunk.
WEIGHTED_CHUNK_BYTES = 8 * 51


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cuda-stream")
    rng = np.random.default_rng(3)
    X = rng.standard_normal((N_SAMPLES, N_FEATURES)) * [1.0, 2.0, 0.5] + 1.5
    Y = X @ rng.standard_normal((N_FEATURES, N_OUTPUTS)) + 0.3 + 0.1 * rng.standard_normal((N_SAMPLES, N_OUTPUTS))
    weights = rng.uniform(0.2, 2.0, N_SAMPLES)
    weights[[4, 20]] = 0.0
    paths = {}
    for name, array in {"X": X, "Y": Y, "y": Y[:, 0].copy(), "w": weights,
                        "X32": X.astype(np.float32), "Y32": Y.astype(np.float32)}.items():
        paths[name] = directory / f"{name}.npy"
        np.save(paths[name], array)
    return {"X": X, "Y": Y, "w": weights}, paths


def streamed_both(paths, options, *, weighted=False, X="X", Y="Y", rtol=1e-6, chunk_bytes=None):
    """The streamed fit on cpu and on cuda; asserts they land together, returns both."""
    weights = paths["w"] if weighted else None
    chunk_bytes = chunk_bytes or (WEIGHTED_CHUNK_BYTES if weighted else CHUNK_BYTES)
    settings = dict(init="zeros", random_state=7) | options
    models = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning of the tol runs: the same on both sides
        for backend in ("cpu", "cuda"):
            models[backend] = outofcore.fit(LinearRegressor(backend=backend, **settings), paths[X], paths[Y], weights,
                                            chunk_bytes=chunk_bytes)
    cpu, gpu = models["cpu"], models["cuda"]
    assert gpu.stop_reason_ == cpu.stop_reason_
    assert gpu.n_iter_ == cpu.n_iter_
    assert_rel(gpu.loss_history_, cpu.loss_history_, "loss history", rtol)
    assert_rel(gpu.coef_, cpu.coef_, "coef_", rtol)
    assert_rel(gpu.intercept_, cpu.intercept_, "intercept_", rtol)
    assert gpu.coef_.dtype == cpu.coef_.dtype
    return cpu, gpu


def test_the_budget_makes_five_chunks_of_several_blocks(files, small_grid):
    """The comparisons below mean something only if the data crosses chunks, buffers and blocks."""
    for weights, budget in ((None, CHUNK_BYTES), (files[1]["w"], WEIGHTED_CHUNK_BYTES)):
        data = outofcore.open_dataset(files[1]["X"], files[1]["Y"], weights)
        assert outofcore.chunk_rows_for(data, budget) == 8  # 5 chunks, the last of 5 rows: 2 blocks each
        data.close()


FULL_BATCH = [
    dict(lr=0.05, epochs=4),
    dict(lr=0.05, epochs=4, momentum=0.9, nesterov=True),
    dict(lr="auto", epochs=4, standardize=True),
    dict(lr=0.05, epochs=4, optimizer="adamw", penalty="elasticnet", alpha=0.01),
    dict(lr=0.05, epochs=4, schedule="cosine", penalty="l2", alpha=0.1),
    dict(lr=0.05, epochs=40, tol=1e-2, n_iter_no_change=2),
]


def label(options):
    return ",".join(f"{k}={v}" for k, v in options.items())


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("options", FULL_BATCH, ids=label)
def test_full_batch_gd_over_device_chunks_equals_the_cpu_streamed_fit(files, options, weighted, small_grid):
    streamed_both(files[1], options, weighted=weighted)


@pytest.mark.parametrize("options", [
    dict(lr=0.05, epochs=3, batch_size=4, momentum=0.9),
    dict(lr=0.05, epochs=3, batch_size=4, shuffle=False),
    dict(lr=0.03, epochs=3, batch_size=3, optimizer="adam", amsgrad=True),
    dict(lr=0.05, epochs=3, batch_size=4, schedule="step", step_size=1, gamma=0.5, penalty="l1", alpha=0.01),
], ids=label)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_minibatches_over_device_chunks_equal_the_cpu_streamed_fit(files, options, weighted, small_grid):
    """The chunk order, each chunk's row order and the batch boundaries are the CPU streamed run's."""
    cpu, _ = streamed_both(files[1], options, weighted=weighted)
    assert cpu.n_iter_ == 3


@pytest.mark.parametrize("options", [
    dict(solver="normal"),
    dict(solver="normal", standardize=True, penalty="l2", alpha=0.1),
    dict(solver="gram", epochs=6, lr="auto", standardize=True, momentum=0.5),
], ids=label)
def test_exact_and_gram_solvers_stream_on_cuda(files, options, small_grid):
    streamed_both(files[1], options, weighted=True, rtol=1e-9)


def test_float32_files_and_a_1d_target(files, small_grid):
    cpu, gpu = streamed_both(files[1], dict(lr=0.05, epochs=3, batch_size=4, momentum=0.5), X="X32", Y="Y32",
                             rtol=1e-5, chunk_bytes=8 * 23)
    assert gpu.coef_.dtype == np.float32
    _, gpu_1d = streamed_both(files[1], dict(lr=0.05, epochs=3), Y="y")
    assert gpu_1d.coef_.ndim == 1 and np.ndim(gpu_1d.intercept_) == 0


def test_memmaps_stream_like_files(files, small_grid):
    arrays, paths = files
    X = np.load(paths["X"], mmap_mode="r")
    Y = np.load(paths["Y"], mmap_mode="r")
    expected = outofcore.fit(LinearRegressor(backend="cpu", lr=0.05, epochs=3), X, Y, chunk_bytes=CHUNK_BYTES)
    model = outofcore.fit(LinearRegressor(backend="cuda", lr=0.05, epochs=3), X, Y, chunk_bytes=CHUNK_BYTES)
    assert_rel(model.loss_history_, expected.loss_history_, "loss history")
    assert_rel(model.coef_, expected.coef_, "coef_")


def test_the_estimator_streams_paths_on_cuda(files, small_grid):
    """LinearRegressor(backend="cuda").fit(paths): the estimator's out-of-core dispatch, default budget."""
    arrays, paths = files
    model = LinearRegressor(backend="cuda", lr=0.05, epochs=3).fit(paths["X"], paths["Y"])
    expected = LinearRegressor(backend="cpu", lr=0.05, epochs=3).fit(paths["X"], paths["Y"])
    assert_rel(model.coef_, expected.coef_, "coef_")
    assert model.backend == "cuda"


def test_parquet_streams_through_the_same_row_source(files, tmp_path, small_grid):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    arrays = files[0]
    columns = {f"x{j}": arrays["X"][:, j] for j in range(N_FEATURES)} | {"t": arrays["Y"][:, 0], "w": arrays["w"]}
    pq.write_table(pa.table(columns), tmp_path / "data.parquet", row_group_size=10)
    models = {}
    for backend in ("cpu", "cuda"):
        models[backend] = outofcore.fit(LinearRegressor(backend=backend, lr=0.05, epochs=3, batch_size=4,
                                                        random_state=2),
                                        tmp_path / "data.parquet", "t", "w", chunk_bytes=400)
    assert_rel(models["cuda"].loss_history_, models["cpu"].loss_history_, "loss history")
    assert_rel(models["cuda"].coef_, models["cpu"].coef_, "coef_")
    assert list(models["cuda"].feature_names_in_) == [f"x{j}" for j in range(N_FEATURES)]


def test_bad_values_in_a_chunk_are_named_on_cuda(files, tmp_path, small_grid):
    X = files[0]["X"].copy()
    X[29, 2] = np.nan
    np.save(tmp_path / "bad.npy", X)
    with pytest.raises(ValueError, match="row 29, column 2"):
        outofcore.fit(LinearRegressor(backend="cuda", lr=0.05, epochs=2), tmp_path / "bad.npy", files[1]["Y"],
                      chunk_bytes=CHUNK_BYTES)


# --------------------------------------------------------------------------- what crosses the bus


def epoch_transfers(transfers, paths, options, *, chunk_bytes=CHUNK_BYTES, epochs=2):
    transfers.clear()
    outofcore.fit(LinearRegressor(backend="cuda", epochs=epochs, **options), paths["X"], paths["Y"],
                  chunk_bytes=chunk_bytes)
    return transfers


def test_full_batch_epoch_copies_each_chunk_once_and_launches_two_kernels_a_chunk(files, small_grid, transfers):
    n_chunks, row_bytes_X, row_bytes_Y = 5, N_FEATURES * 8, N_OUTPUTS * 8
    record = epoch_transfers(transfers, files[1], dict(lr=0.05))
    launches = [name for name in record.launches if name in ("batch_partials", "accumulate_blocks")]
    assert launches == ["batch_partials", "accumulate_blocks"] * n_chunks * 2  # 2 epochs
    chunk_copies = [n for n in record.to_device if n in (8 * row_bytes_X, 5 * row_bytes_X, 8 * row_bytes_Y,
                                                         5 * row_bytes_Y)]
    assert chunk_copies == ([8 * row_bytes_X, 8 * row_bytes_Y] * 4 + [5 * row_bytes_X, 5 * row_bytes_Y]) * 2
    sums_bytes = 8 * (2 + N_OUTPUTS * (N_FEATURES + 1))
    assert record.to_host.count(sums_bytes) == 2  # the sums, once an epoch


def test_minibatch_steps_launch_two_kernels_and_copy_the_sums_back_once(files, small_grid, transfers):
    # A shuffled run's rows take 8 bytes more (their order): 8 * 51 bytes are chunks of 8 rows again.
    record = epoch_transfers(transfers, files[1], dict(lr=0.05, batch_size=4), epochs=1, chunk_bytes=8 * 51)
    steps = 4 * 2 + 2  # chunks of 8 rows: 2 batches each, the last chunk (5 rows) 2 batches (4 + 1)
    launches = [name for name in record.launches if name in ("batch_partials", "sum_blocks")]
    assert launches == ["batch_partials", "sum_blocks"] * steps
    sums_bytes = 8 * (2 + N_OUTPUTS * (N_FEATURES + 1))
    assert record.to_host.count(sums_bytes) == steps
    assert record.to_device.count(8 * 8) == 4 and record.to_device.count(5 * 8) == 1  # each chunk's row order


def test_the_statistics_pass_runs_on_the_device_chunks(files, small_grid, transfers):
    """standardize + lr="auto": one pass, per chunk the Gram kernel and the two moment passes on the device; the
    chunks cross once for it, and the (F+1)-sized results come back."""
    record = epoch_transfers(transfers, files[1], dict(lr="auto", standardize=True), epochs=1)
    statistics = [name for name in record.launches if name in ("gram_partials", "column_partials")]
    assert statistics == ["gram_partials", "column_partials", "column_partials"] * 5
    gram_terms = (N_FEATURES + 1) ** 2 + (N_FEATURES + 1) * N_OUTPUTS + N_OUTPUTS
    assert record.to_host.count(gram_terms * 8) == 5


def test_a_shard_of_two_chunks_stays_on_the_device(files, small_grid, transfers):
    """At most two chunks: each keeps its own buffer, so X and Y cross once per fit, not once per epoch."""
    half = 19 * 43  # 19 rows a chunk: 2 chunks
    record = epoch_transfers(transfers, files[1], dict(lr=0.05), chunk_bytes=half, epochs=3)
    data_copies = [n for n in record.to_device if n >= 18 * N_OUTPUTS * 8]
    assert sorted(data_copies) == sorted([19 * N_FEATURES * 8, 19 * N_OUTPUTS * 8, 18 * N_FEATURES * 8,
                                          18 * N_OUTPUTS * 8])
    cpu = outofcore.fit(LinearRegressor(lr=0.05, epochs=3), files[1]["X"], files[1]["Y"], chunk_bytes=half)
    gpu = outofcore.fit(LinearRegressor(backend="cuda", lr=0.05, epochs=3), files[1]["X"], files[1]["Y"],
                        chunk_bytes=half)
    assert_rel(gpu.coef_, cpu.coef_, "coef_")


def test_chunks_alternate_between_two_buffers_with_events(files, small_grid):
    """The double buffering itself: chunk k in buffer k % 2, its copy recorded before it is handed out, the
    consumer's kernels recorded when the next chunk is asked for."""
    data = outofcore.open_dataset(files[1]["X"], files[1]["Y"])
    try:
        reader = outofcore.ShardReader(data, 0, N_SAMPLES, 8)
        chunks = DeviceChunks(reader)
        seen = []
        for X, Y, weights, order in chunks.chunks([3, 0, 4, 1, 2]):
            buffer = next(i for i in range(2) if _same_memory(chunks.device[i][0], X))
            assert chunks.copied[buffer] is not None and weights is None and order is None
            seen.append((buffer, X.shape[0]))
            start, stop = reader.bounds([3, 0, 4, 1, 2][len(seen) - 1])
            np.testing.assert_array_equal(X.copy_to_host(), files[0]["X"][start:stop])
            np.testing.assert_array_equal(Y.copy_to_host(), files[0]["Y"][start:stop])
        assert [buffer for buffer, _ in seen] == [0, 1, 0, 1, 0]
        assert [n for _, n in seen] == [8, 8, 5, 8, 8]
        assert all(event is not None for event in chunks.released)
    finally:
        data.close()


def _same_memory(device_buffer, view) -> bool:
    from cuda_helpers import data_pointer

    return data_pointer(device_buffer) == data_pointer(view)


def test_device_for_rank_is_local_rank_modulo_the_devices(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert device_for_rank(4) == 1 and device_for_rank(1) == 0
    monkeypatch.delenv("LOCAL_RANK")
    assert device_for_rank(2) == 0
    with pytest.raises(ValueError, match="no GPU"):
        device_for_rank(0)


# --------------------------------------------------------------------------- distributed, one GPU per rank

WORKER = r"""
import json, os, sys, warnings
import numpy as np
from linreg import LinearRegressor, distributed
from linreg.kernels import cuda as cuda_kernels

for name, value in json.load(open(sys.argv[1]))["grid"].items():
    setattr(cuda_kernels, name, value)
config = json.load(open(sys.argv[1]))
distributed.init("gloo", timeout=60)
result = {}
for name, options, shards in config["fits"]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = distributed.fit(LinearRegressor(**options), config["X"], config["Y"], chunk_bytes=config["chunk"],
                                shards=shards)
    result[name] = {"coef": model.coef_.tolist(), "intercept": model.intercept_.tolist(),
                    "history": model.loss_history_.tolist(), "stop": model.stop_reason_}
print(json.dumps(result), flush=True)
"""

DISTRIBUTED_FITS = [
    ("gd", dict(lr=0.05, epochs=3, momentum=0.5), None),
    ("gd-uneven-auto", dict(lr="auto", epochs=3, standardize=True), [[0, 9], [9, N_SAMPLES]]),
    ("sgd", dict(lr=0.05, epochs=2, batch_size=4, random_state=3), None),
    ("gd-empty-shard", dict(lr=0.05, epochs=2, penalty="l2", alpha=0.1), [[0, 0], [0, N_SAMPLES]]),
]


def test_two_ranks_on_cuda_train_the_cpu_distributed_model(files, tmp_path, small_grid):
    """Each rank's sums on its device (here: the simulator), combined by the gloo collective on host copies; the
    same fits on backend="cpu" as the reference. Rank r's device is LOCAL_RANK % n_devices (not visible here)."""
    pytest.importorskip("torch")
    config = tmp_path / "config.json"
    fits = [(name + "-" + backend, dict(options, backend=backend), shards)
            for name, options, shards in DISTRIBUTED_FITS for backend in ("cpu", "cuda")]
    config.write_text(json.dumps({"X": str(files[1]["X"]), "Y": str(files[1]["Y"]), "chunk": CHUNK_BYTES,
                                  "fits": fits, "grid": small_grid}))
    (tmp_path / "worker.py").write_text(WORKER)
    outputs = run_ranks(tmp_path / "worker.py", config)
    for name, _, _ in DISTRIBUTED_FITS:
        cpu, gpu = outputs[0][name + "-cpu"], outputs[0][name + "-cuda"]
        assert outputs[1][name + "-cuda"] == gpu, name  # identical on every rank
        assert gpu["stop"] == cpu["stop"] and len(gpu["history"]) == len(cpu["history"])
        for key in ("history", "coef", "intercept"):
            assert_rel(gpu[key], cpu[key], f"{name} {key}")


def test_the_streamed_cuda_source_is_a_streamed_source():
    assert issubclass(DeviceStreamed, outofcore.Streamed) and DeviceStreamed.streams


def test_the_gpu_checks_nccl_step_runs_its_plumbing_on_gloo(tmp_path):
    """scripts/nccl_check.py (gpu-check.sh's NCCL step) with gloo and the simulator: the same torchrun launch,
    fits and comparison, so the hardware step only adds NCCL and the device's memory. One rank: two ranks on
    backend="cuda" are the test above."""
    pytest.importorskip("torch")
    script = Path(__file__).resolve().parents[2] / "scripts" / "nccl_check.py"
    arguments = ["--ranks", "1", "--dist-backend", "gloo", "--rows", "300", "--epochs", "2",
                 "--out", str(tmp_path / "result.json")]
    result = subprocess.run([sys.executable, str(script), *arguments], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("nccl check:")]
    assert len(lines) == 3 and all(": ok (" in line for line in lines), result.stdout
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["device"] == "the CUDA simulator" and len(saved["gd-momentum/cuda"]["history"]) == 2


def test_what_cannot_stream_is_refused_naming_it_on_cuda_too(files, small_grid):
    """early_stopping (a random validation subset held apart every epoch) is refused out of core on both backends;
    the torch backend does not stream: clear errors, never a silent fallback."""
    paths = files[1]
    with pytest.raises(ValueError, match="early_stopping is not supported out of core"):
        outofcore.fit(LinearRegressor(backend="cuda", early_stopping=True, tol=1e-3), paths["X"], paths["Y"])
    with pytest.raises(ValueError, match="run on backend='cpu' or 'cuda'"):
        outofcore.fit(LinearRegressor(backend="torch"), paths["X"], paths["Y"])
