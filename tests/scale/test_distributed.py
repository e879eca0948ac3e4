"""Data-parallel training (linreg.distributed) with 2 gloo processes on localhost.

Each test starts real processes (one numba thread each, free ports), so the
file keeps launches few: one launch runs every fit of the Python API, one runs
the torchrun command line, and one each shows that a rank that never starts,
dies or hangs gives a clear error within the timeout instead of a hang.

Documented rounding: with 2 ranks the gradient sums of the two shards are added
by the all-reduce, where one process adds all chunks in order: the trajectories
differ by summation order only (~1e-16 relative per step; asserted 1e-12, as
streaming against in-memory). The exact and gram solvers go through the Gram
statistics, whose loss formula cancels (see test_outofcore): 1e-10.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import LAUNCH_TIMEOUT, free_port, kill_leftovers, torch_reference_fit, worker_env

from linreg import LinearRegressor, cli, distributed, load, outofcore
from linreg.testing import assert_close

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

N_SAMPLES, N_FEATURES, N_OUTPUTS = 3001, 5, 2
CHUNK_BYTES = 12_000  # ~150 rows: every rank streams several chunks

#: Fits run by every rank of the API launch: (name, estimator options, shards or None, weighted).
FITS = [
    ("gd", {"epochs": 30, "lr": 0.01}, None, False),
    ("gd-uneven-weighted", {"epochs": 30, "lr": "auto", "standardize": True, "momentum": 0.5},
     [[0, 100], [100, N_SAMPLES]], True),
    ("gd-empty-shard", {"epochs": 20, "lr": 0.01, "penalty": "l2", "alpha": 0.1}, [[0, 0], [0, N_SAMPLES]], False),
    ("tol-adaptive", {"epochs": 200, "lr": 0.02, "tol": 1e-3, "schedule": "adaptive"}, None, False),
    ("normal", {"solver": "normal", "standardize": True, "penalty": "l2", "alpha": 0.1}, [[0, 1000], [1000, N_SAMPLES]],
     True),
    ("gram", {"solver": "gram", "epochs": 40, "lr": "auto"}, None, False),
    ("sgd", {"epochs": 2, "lr": 0.002, "batch_size": 64, "random_state": 5}, [[0, 700], [700, N_SAMPLES]], False),
]

WORKER = r"""
import json, os, sys, time, warnings
import numpy as np
from linreg import LinearRegressor, distributed

scenario, config_path = sys.argv[1], sys.argv[2]
config = json.load(open(config_path))
rank = int(os.environ["RANK"])
result = {"rank": rank}


def fitted(model):
    coef = np.asarray(model.coef_, np.float64)
    return {"coef": coef.tolist(), "intercept": np.asarray(model.intercept_).tolist(),
            "history": model.loss_history_.tolist(), "n_iter": model.n_iter_, "stop_reason": model.stop_reason_,
            "bits": coef.tobytes().hex() + np.asarray(model.intercept_, np.float64).tobytes().hex()}


def sabotage(after_calls, action):
    # Rank 1 stops taking part after some all-reduces: it dies, or it hangs (alive, silent).
    original = distributed.TorchCollective.sum
    calls = []

    def sum(self, values, what):
        calls.append(what)
        if len(calls) > after_calls:
            action()
        return original(self, values, what)

    distributed.TorchCollective.sum = sum


try:
    started = time.perf_counter()
    distributed.init(timeout=config["timeout"])
    result["init_seconds"] = time.perf_counter() - started
    files = config["files"]
    if scenario == "api":
        result["fits"] = {}
        for name, options, shards, weighted in config["fits"]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = distributed.fit(LinearRegressor(**options), files["X"], files["Y"],
                                        files["w"] if weighted else None, chunk_bytes=config["chunk_bytes"],
                                        shards=shards)
            result["fits"][name] = fitted(model)
    else:
        if scenario == "dies" and rank == 1:
            sabotage(5, lambda: os._exit(7))
        if scenario == "hangs" and rank == 1:
            sabotage(5, lambda: time.sleep(600))
        lr = 0.02 if scenario == "disagree" and rank == 1 else 0.01
        started = time.perf_counter()
        distributed.fit(LinearRegressor(epochs=50, lr=lr), files["X"], files["Y"], chunk_bytes=config["chunk_bytes"])
        result["finished"] = True
except Exception as error:
    result["error"] = f"{type(error).__name__}: {error}"
    result["error_seconds"] = time.perf_counter() - started
print(json.dumps(result), flush=True)
"""


def launch(tmp_path, files, scenario, *, ranks=(0, 1), world_size=2, timeout=30.0, fits=(), others_wait=20.0):
    """Start the given ranks of a ``world_size`` group; wait for rank 0, then stop the rest. Returns their JSON.

    The other ranks get ``others_wait`` seconds after rank 0 ends before they are killed (a hung rank never ends).
    """
    config = tmp_path / f"{scenario}.json"
    config.write_text(json.dumps({"files": {k: str(v) for k, v in files.items()}, "timeout": timeout,
                                  "chunk_bytes": CHUNK_BYTES, "fits": fits}))
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    port = free_port()
    processes = [subprocess.Popen([sys.executable, str(worker), scenario, str(config)], env=worker_env(r, world_size,
                                  port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in ranks]
    outputs = []
    try:
        for index, process in enumerate(processes):
            wait = LAUNCH_TIMEOUT if index == 0 else others_wait
            try:
                stdout, stderr = process.communicate(timeout=wait)
            except subprocess.TimeoutExpired:
                if index == 0:
                    raise
                process.kill()
                stdout, stderr = process.communicate()
            outputs.append({"returncode": process.returncode, "stderr": stderr,
                            **(json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else {})})
    finally:
        kill_leftovers(processes)
    return outputs


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("distributed")
    paths = {name: directory / f"{name}.npy" for name in ("X", "Y", "w")}
    outofcore.write_synthetic(paths["X"], paths["Y"], N_SAMPLES, N_FEATURES, n_outputs=N_OUTPUTS, random_state=3,
                              chunk_rows=1000)
    X = np.load(paths["X"])
    np.save(paths["X"], X * np.arange(1, N_FEATURES + 1) + 2.0)  # offset, unevenly scaled columns
    np.save(paths["w"], np.random.default_rng(4).uniform(0.5, 2.0, N_SAMPLES))
    return paths


@pytest.fixture(scope="module")
def api_launch(tmp_path_factory, files):
    outputs = launch(tmp_path_factory.mktemp("api"), files, "api", fits=FITS)
    for output in outputs:
        assert output["returncode"] == 0 and "error" not in output, output
    return outputs


def single_process(files, options, weighted):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return outofcore.fit(LinearRegressor(**options), files["X"], files["Y"], files["w"] if weighted else None,
                             chunk_bytes=CHUNK_BYTES)


@pytest.mark.parametrize("name", [name for name, *_ in FITS if name != "sgd"])
def test_two_ranks_train_the_single_process_model(api_launch, files, name):
    _, options, shards, weighted = next(fit for fit in FITS if fit[0] == name)
    rank0, rank1 = (output["fits"][name] for output in api_launch)
    assert rank0["bits"] == rank1["bits"] and rank0["history"] == rank1["history"]  # identical on every rank
    expected = single_process(files, options, weighted)
    rtol = 1e-10 if options.get("solver") in ("normal", "gram") else 1e-12
    assert rank0["n_iter"] == expected.n_iter_ and rank0["stop_reason"] == expected.stop_reason_
    np.testing.assert_allclose(rank0["history"], expected.loss_history_, rtol=rtol)
    for key, value in (("coef", expected.coef_), ("intercept", expected.intercept_)):
        assert np.abs(np.array(rank0[key]) - value).max() <= rtol * np.abs(value).max(), key


def test_two_ranks_sgd_steps_on_the_union_of_the_local_batches(api_launch, files):
    """A global batch is rank 0's k-th local batch plus rank 1's; with uneven shards rank 0 runs out first."""
    _, options, shards, _ = next(fit for fit in FITS if fit[0] == "sgd")
    rank0, rank1 = (output["fits"]["sgd"] for output in api_launch)
    assert rank0["bits"] == rank1["bits"]
    data = outofcore.open_dataset(files["X"], files["Y"])
    local = outofcore.local_batch_sizes(options["batch_size"], 2)
    chunk_rows = [outofcore.chunk_rows_for(data, CHUNK_BYTES, batch, shuffle=True) for batch in local]
    data.close()
    assert chunk_rows[0] < shards[0][1]  # several chunks per rank

    def global_batches(epoch):
        per_rank = [outofcore.epoch_batches(options["random_state"], epoch, hi - lo, chunk_rows[rank], local[rank],
                                            rank=rank, lo=lo) for rank, (lo, hi) in enumerate(shards)]
        steps = max(len(batches) for batches in per_rank)
        assert len(per_rank[0]) < steps  # the small shard is used up before the large one
        return [np.concatenate([batches[k] for batches in per_rank if k < len(batches)]) for k in range(steps)]

    X, Y = np.load(files["X"]), np.load(files["Y"])
    W, b, history = torch_reference_fit(X, Y, np.ones((N_OUTPUTS, N_FEATURES)), np.ones(N_OUTPUTS),
                                        epochs=options["epochs"], batches=global_batches,
                                        make_optimizer=lambda w, b: torch.optim.SGD([w, b], lr=options["lr"]))
    assert_close(rank0["history"], history, np.float64, "trajectory", "loss history")
    assert_close(rank0["coef"], W, np.float64, "trajectory", "coef_")
    assert_close(rank0["intercept"], b, np.float64, "trajectory", "intercept_")


def test_torchrun_command_line_trains_on_two_ranks_and_rank_0_writes(tmp_path, files):
    model_path, log_path = tmp_path / "model.npz", tmp_path / "run.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "linreg.distributed", "--dataset", str(files["X"]), "--target-file", str(files["Y"]),
               "--distributed", "--epochs", "25", "--lr", "0.01", "--standardize", "--no-progress",
               "--chunk-mb", str(CHUNK_BYTES / 2**20), "--save", str(model_path), "--run-log", str(log_path),
               "--dist-timeout", "60"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("model written to") == 1  # rank 0 only
    log = json.loads(log_path.read_text())
    assert log["world_size"] == 2 and log["shards"] == [[0, 1501], [1501, N_SAMPLES]]
    assert log["collectives"]["floats_per_step"] == N_OUTPUTS * (N_FEATURES + 1) + 2
    if "NUMBA_NUM_THREADS" not in os.environ:  # each rank gets its share of the cores, not all of them
        assert log["threads_per_rank"] == max(1, len(os.sched_getaffinity(0)) // 2)
    expected = single_process(files, {"epochs": 25, "lr": 0.01, "standardize": True}, False)
    model = load(model_path)
    assert np.abs(model.coef_ - expected.coef_).max() <= 1e-12 * np.abs(expected.coef_).max()
    np.testing.assert_allclose(model.loss_history_, expected.loss_history_, rtol=1e-12)


def test_a_rank_that_never_starts_is_an_error_within_the_timeout(tmp_path, files):
    (rank0,) = launch(tmp_path, files, "never", ranks=(0,), timeout=3.0)
    assert rank0["error"].startswith("DistributedError: rank 0 of 2: the process group did not form within")
    assert "did every rank start" in rank0["error"]
    assert 2.5 <= rank0["error_seconds"] < 15


def test_a_rank_that_dies_is_an_error_on_the_others_at_once(tmp_path, files):
    rank0, rank1 = launch(tmp_path, files, "dies", timeout=60.0)
    assert rank1["returncode"] == 7 and rank0["returncode"] == 0  # rank 0 reports, then exits cleanly
    assert rank0["error"].startswith("DistributedError: rank 0 of 2: all_reduce (sum) of the gradient sums of epoch")
    assert "another rank died, hung or timed out" in rank0["error"]
    assert rank0["error_seconds"] < 30  # the closed connection is noticed long before the 60 s timeout


def test_a_rank_that_hangs_is_an_error_after_the_timeout(tmp_path, files):
    rank0, _ = launch(tmp_path, files, "hangs", timeout=4.0, others_wait=0.1)
    assert rank0["error"].startswith("DistributedError: rank 0 of 2: all_reduce (sum) of the gradient sums of epoch")
    assert "(timeout 4 s)" in rank0["error"] and rank0["returncode"] == 0
    assert 3.5 <= rank0["error_seconds"] < 20


def test_ranks_that_disagree_on_the_options_refuse_to_train(tmp_path, files):
    outputs = launch(tmp_path, files, "disagree", timeout=30.0)
    for output in outputs:
        assert "DistributedError: the ranks disagree on the data's shape and dtype, chunk_bytes and the training " \
               "options" in output["error"], output


def test_fit_without_a_process_group_says_how_to_start_one(files):
    with pytest.raises(distributed.DistributedError, match="torch.distributed is not initialised"):
        distributed.fit(LinearRegressor(epochs=1), files["X"], files["Y"])


def test_init_without_torchrun_environment_names_what_is_missing(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(distributed.DistributedError, match="RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT not set"):
        distributed.init()


def test_shards_and_batches_are_checked():
    assert outofcore.even_shards(5, 2) == [(0, 3), (3, 5)]
    assert outofcore.check_shards([[0, 0], [0, 5]], 5, 2) == [(0, 0), (0, 5)]
    with pytest.raises(ValueError, match="rank 1 has \\[2, 5\\), expected it to start at 3"):
        outofcore.check_shards([(0, 3), (2, 5)], 5, 2)
    with pytest.raises(ValueError, match="cover all 6 rows; they end at row 5"):
        outofcore.check_shards([(0, 3), (3, 5)], 6, 2)
    with pytest.raises(ValueError, match="one \\(lo, hi\\) row range per rank: 2 ranks, got 1"):
        outofcore.check_shards([(0, 5)], 5, 2)
    assert outofcore.local_batch_sizes(65, 2) == [33, 32]
    with pytest.raises(ValueError, match="at least the number of ranks \\(2\\), got 1"):
        outofcore.local_batch_sizes(1, 2)


# --------------------------------------------------------------------------- the linreg train integration


def train_parser():
    """``linreg train``'s parser with this module's flags, added here unless linreg/cli.py already adds them."""
    parser = cli.build_parser()
    train = next(action for action in parser._subparsers._group_actions if action.dest == "command").choices["train"]
    if "--target-file" not in train._option_string_actions:
        cli.add_streaming_arguments(train)
    return parser


def test_cli_flags_fit_linreg_train_and_stream_out_of_core(files, tmp_path, capsys):
    args = train_parser().parse_args(["train", "--dataset", str(files["X"]), "--target-file", str(files["Y"]),
                                      "--weight-file", str(files["w"]), "--epochs", "15", "--lr", "auto",
                                      "--standardize", "--no-progress", "--chunk-mb", "0.01", "--save",
                                      str(tmp_path / "m.npz"), "--run-log", str(tmp_path / "log.json")])
    assert cli.run_streaming(args) == 0
    out = capsys.readouterr().out
    assert "streamed in chunks of" in out and "on one process" in out
    expected = single_process(files, {"epochs": 15, "lr": "auto", "standardize": True}, True)
    model = load(tmp_path / "m.npz")
    np.testing.assert_array_equal(model.loss_history_, outofcore.fit(
        LinearRegressor(epochs=15, lr="auto", standardize=True), files["X"], files["Y"], files["w"],
        chunk_bytes=int(0.01 * 2**20)).loss_history_)
    np.testing.assert_allclose(model.coef_, expected.coef_, rtol=1e-10)
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["world_size"] == 1 and not log["distributed"] and len(log["epoch_seconds"]) == 15


def test_cli_errors_are_clear(files, capsys):
    parser = train_parser()
    with pytest.raises(cli.CliError, match="give --dataset X.npy --target-file y.npy"):
        cli.run_streaming(parser.parse_args(["train", "--dataset", str(files["X"]), "--distributed"]))
    with pytest.raises(cli.CliError, match="--checkpoint and --resume are not supported with --target-file"):
        cli.run_streaming(parser.parse_args(["train", "--dataset", str(files["X"]), "--target-file",
                                                    str(files["Y"]), "--checkpoint", "never-written.npz"]))
    with pytest.raises(cli.CliError, match="early_stopping is not supported out of core"):
        cli.run_streaming(parser.parse_args(["train", "--dataset", str(files["X"]), "--target-file",
                                                    str(files["Y"]), "--early-stopping", "--tol", "0.001"]))
    assert distributed.main(["--dataset", str(files["X"]), "--target-file", str(files["Y"]), "--epochs", "2",
                             "--no-progress"]) == 0
    assert "epochs run" in capsys.readouterr().out
