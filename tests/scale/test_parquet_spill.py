"""The Parquet spill (linreg.spill): a fit of several passes decodes the first and reads the others from a private
temporary file, with the same bits as decoding every pass; the file is gone when the fit ends, however it ends;
no spill for one pass, for lack of disk space (one warning), or when turned off; a distributed rank spills its share.

The spill's file has no name (``tempfile.TemporaryFile``: O_TMPFILE on Linux), so the tests find it among the
process's open files (``/proc/self/fd``: "<folder>/#<inode> (deleted)").
"""

import errno
import os
import warnings

import numpy as np
import pytest

from linreg import LinearRegressor, outofcore, parquet, spill
from linreg import options as linreg_options
from linreg.parquet import Parquet

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="finds the spill file in /proc/self/fd")

N_SAMPLES = 4001
FEATURES = [f"x{j}" for j in range(8)]
BUDGET = 30_000  # ~300 rows of the 8-feature, 2-output float32/float64 chunks: 10-20 chunks


@pytest.fixture(scope="module")
def table_file(tmp_path_factory):
    """float32 features (offset, unevenly scaled), a float64 second target (so y is float64: X's float32 columns
    are converted into a float64 chunk) and weights, in row groups of 900 that do not line up with the chunks."""
    rng = np.random.default_rng(14)
    X = (rng.standard_normal((N_SAMPLES, 8)) * rng.uniform(0.5, 3, 8) + 2).astype(np.float32)
    Y = X.astype(np.float64) @ rng.standard_normal((8, 2)) + 0.1 * rng.standard_normal((N_SAMPLES, 2))
    columns = {f"x{j}": X[:, j] for j in range(8)}
    columns.update({"t0": Y[:, 0].astype(np.float32), "t1": Y[:, 1], "w": rng.uniform(0.5, 2, N_SAMPLES)})
    path = tmp_path_factory.mktemp("spill") / "data.parquet"
    pq.write_table(pa.table(columns), path, row_group_size=900)
    return path


def spill_files(folder) -> list[tuple[str, int]]:
    """(link target, size) of this process's open files in ``folder`` (the spill files)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(f"{folder}/"):
                found.append((target, os.stat(f"/proc/self/fd/{fd}").st_size))
        except OSError:  # the fd of listdir itself, closed since
            continue
    return found


class Recorder:
    """Wraps ``spill.SpilledRows`` to see, per fit, which sources spilled, what they read from their Parquet
    source, and the spill files open while the fit ran (looked at on each read)."""

    def __init__(self, monkeypatch, folder) -> None:
        self.folder, self.spilled, self.open_files = folder, [], []
        original_init, original_read = spill.SpilledRows.__init__, spill.SpilledRows.read
        recorder = self

        def init(self, *args, **kwargs):
            original_init(self, *args, **kwargs)
            recorder.spilled.append(self)

        def read(self, start, stop, out):
            recorder.open_files.append(len(spill_files(recorder.folder)))
            return original_read(self, start, stop, out)

        monkeypatch.setattr(spill.SpilledRows, "__init__", init)
        monkeypatch.setattr(spill.SpilledRows, "read", read)


def fit(path, options, *, spill_to, targets=("t0", "t1"), weight="w", chunk_bytes=BUDGET):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # ConvergenceWarning (tol): the same either way
        warnings.simplefilter("error", category=spill.SpillWarning)
        targets = targets if isinstance(targets, str) else list(targets)
        return outofcore.fit(LinearRegressor(**options), Parquet(path, FEATURES, spill=spill_to), targets, weight,
                             chunk_bytes=chunk_bytes)


def planned_passes(options) -> int:
    return outofcore.planned_passes(linreg_options.make_spec(LinearRegressor(**options).get_params()))


def n_chunks_of(path, options) -> int:
    """The chunks of the fit of ``options`` on ``path`` (two targets, weights, BUDGET)."""
    data = outofcore.open_dataset(path, ["t0", "t1"], "w")
    try:
        batch = options.get("batch_size")
        rows = outofcore.chunk_rows_for(data, BUDGET, batch, batch is not None and options.get("shuffle", True))
    finally:
        data.close()
    return -(-N_SAMPLES // rows)


def same_bits(a, b) -> None:
    for name in ("coef_", "intercept_", "loss_history_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.coef_.dtype == b.coef_.dtype


SEVERAL_PASSES = [
    pytest.param({"epochs": 6, "lr": 0.01}, 6, id="gd"),
    pytest.param({"epochs": 5, "tol": None}, 6, id="gd-standardize-auto-lr"),  # a statistics pass, then 5 epochs
    pytest.param({"epochs": 3, "lr": 0.002, "batch_size": 64, "random_state": 3}, 3, id="shuffled-minibatch"),
    pytest.param({"epochs": 4, "lr": 0.002, "batch_size": 50, "shuffle": False, "momentum": 0.9}, 4,
                 id="minibatch-in-order-momentum"),
]


def writer_threads():
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("linreg-spill")]


@pytest.mark.parametrize("write_behind", [True, False], ids=["write-behind", "write-before"])
@pytest.mark.parametrize(("options", "passes"), SEVERAL_PASSES)
def test_the_spill_gives_the_bits_of_decoding_every_pass_and_decodes_once(table_file, tmp_path, monkeypatch,
                                                                          options, passes, write_behind):
    assert planned_passes(options) == passes
    monkeypatch.setattr(spill, "WRITE_BEHIND", write_behind)
    recorder = Recorder(monkeypatch, tmp_path)
    decoded = fit(table_file, options, spill_to=False)
    assert not recorder.spilled  # spill=False: every pass decodes
    spilled = fit(table_file, options, spill_to=tmp_path)
    same_bits(spilled, decoded)
    n_chunks = n_chunks_of(table_file, options)
    assert n_chunks >= 8
    # X, y and the weights spilled; each chunk was decoded on the first pass only, then read back `passes - 1` times.
    assert [s.name for s in recorder.spilled] == ["X", "y", "sample_weight"]
    assert all(s.inner_reads == n_chunks for s in recorder.spilled)
    assert all(len(s.written) == n_chunks for s in recorder.spilled)
    assert len(recorder.open_files) == 3 * n_chunks * passes and min(recorder.open_files) == 3
    assert spill_files(tmp_path) == [] and os.listdir(tmp_path) == []  # freed at the end, nothing left
    assert not writer_threads()


def test_float32_data_spills_float32_rows_and_a_one_output_target(table_file, tmp_path, monkeypatch):
    recorder = Recorder(monkeypatch, tmp_path)
    sizes = []
    original = spill.SpilledRows.read

    def read(self, start, stop, out):
        sizes.append(sorted(size for _, size in spill_files(tmp_path)))
        return original(self, start, stop, out)

    monkeypatch.setattr(spill.SpilledRows, "read", read)
    options = {"epochs": 3, "lr": 0.01}
    spilled = fit(table_file, options, spill_to=tmp_path, targets="t0", weight=None)
    same_bits(spilled, fit(table_file, options, spill_to=False, targets="t0", weight=None))
    assert spilled.coef_.dtype == np.float32 and [s.name for s in recorder.spilled] == ["X", "y"]
    # The files were reserved whole up front: the rows in the compute dtype (float32) of X and of the one target.
    assert sizes[0] == [N_SAMPLES * 4, N_SAMPLES * 8 * 4]


@pytest.mark.parametrize("options", [{"epochs": 1, "lr": 0.01}, {"solver": "normal"},
                                     {"epochs": 3, "lr": 0.01, "batch_size": 64, "random_state": 0}])
def test_no_spill_for_one_pass_or_when_turned_off(table_file, tmp_path, monkeypatch, options):
    recorder = Recorder(monkeypatch, tmp_path)
    if planned_passes(options) > 1:  # several passes: only the module switch turns it off
        monkeypatch.setattr(parquet, "SPILL", False)
    else:
        assert planned_passes(options) == 1
    fit(table_file, options, spill_to=tmp_path)
    assert not recorder.spilled and spill_files(tmp_path) == []


def test_not_enough_disk_space_decodes_every_pass_after_one_warning(table_file, tmp_path, monkeypatch):
    recorder = Recorder(monkeypatch, tmp_path)
    options = {"epochs": 4, "lr": 0.01}
    reference = fit(table_file, options, spill_to=False)
    free = __import__("shutil").disk_usage(tmp_path).free
    monkeypatch.setattr(spill, "DISK_RESERVE", free)  # the rows no longer fit beside what must stay free
    with pytest.warns(spill.SpillWarning, match=r"no spill file: .* MiB free, the decoded rows need") as caught:
        model = outofcore.fit(LinearRegressor(**options), Parquet(table_file, FEATURES, spill=tmp_path),
                              ["t0", "t1"], "w", chunk_bytes=BUDGET)
    assert len([w for w in caught if w.category is spill.SpillWarning]) == 1
    assert not recorder.spilled and spill_files(tmp_path) == []
    same_bits(model, reference)


def test_a_failed_write_abandons_the_spill_with_one_warning(table_file, tmp_path, monkeypatch):
    recorder = Recorder(monkeypatch, tmp_path)
    options = {"epochs": 4, "lr": 0.01}
    reference = fit(table_file, options, spill_to=False)
    writes, original = [0], os.pwrite

    def pwrite(fd, data, offset):
        writes[0] += 1
        if writes[0] == 7:  # the first pass, a few chunks in
            raise OSError(errno.EIO, "Input/output error")
        return original(fd, data, offset)

    monkeypatch.setattr(spill.os, "pwrite", pwrite)
    with pytest.warns(spill.SpillWarning, match="spill file was abandoned .* Input/output error") as caught:
        model = outofcore.fit(LinearRegressor(**options), Parquet(table_file, FEATURES, spill=tmp_path),
                              ["t0", "t1"], "w", chunk_bytes=BUDGET)
    assert len([w for w in caught if w.category is spill.SpillWarning]) == 1
    same_bits(model, reference)
    assert all(s.file is None for s in recorder.spilled) and spill_files(tmp_path) == [] and not writer_threads()
    # Chunk 2's X failed: its rows and every later read were decoded again.
    assert [s.inner_reads for s in recorder.spilled] == [4 * n_chunks_of(table_file, options)] * 3


@pytest.mark.parametrize("what", ["error", "ctrl-c"])
def test_the_file_is_freed_when_a_fit_fails_or_is_interrupted(table_file, tmp_path, monkeypatch, what):
    recorder = Recorder(monkeypatch, tmp_path)
    original = spill.SpilledRows.read

    def read(self, start, stop, out):
        if self.file is not None and (start, stop) in self.written:  # the first read from the spill (pass 2)
            raise KeyboardInterrupt if what == "ctrl-c" else OSError(errno.EIO, "disk gone")
        original(self, start, stop, out)

    monkeypatch.setattr(spill.SpilledRows, "read", read)
    with pytest.raises(KeyboardInterrupt if what == "ctrl-c" else OSError):
        fit(table_file, {"epochs": 5, "lr": 0.01}, spill_to=tmp_path)
    assert recorder.spilled and max(recorder.open_files) == 3
    assert spill_files(tmp_path) == [] and os.listdir(tmp_path) == []
    assert all(s.file is None for s in recorder.spilled) and not writer_threads()


def test_a_rank_spills_its_share_of_the_rows(table_file, tmp_path):
    """Rows [lo, hi) of a shard: the file holds those rows only, and reading them back gives the decoded bytes."""
    lo, hi = 1500, 3700
    data = outofcore.open_dataset(Parquet(table_file, FEATURES, spill=tmp_path), ["t0", "t1"], "w")
    try:
        assert spill.spill_dataset(data, lo, hi, passes=2)
        assert sorted(size for _, size in spill_files(tmp_path)) == [(hi - lo) * 8, (hi - lo) * 8 * 2,
                                                                     (hi - lo) * 8 * 8]
        reader = outofcore.ShardReader(data, lo, hi, 512)
        first = [tuple(a.copy() for a in reader.read(k)[:3]) for k in range(reader.n_chunks)]
        second = [tuple(a.copy() for a in reader.read(k)[:3]) for k in range(reader.n_chunks)]
        assert all(s.inner_reads == reader.n_chunks for s in (data.X, data.Y, data.weights))
        for one, two in zip(first, second, strict=True):
            for a, b in zip(one, two, strict=True):
                np.testing.assert_array_equal(a, b)
        table = pq.read_table(table_file).slice(lo, hi - lo)
        np.testing.assert_array_equal(np.concatenate([x for x, _, _ in second]),
                                      np.column_stack([table[f"x{j}"].to_numpy() for j in range(8)]))
    finally:
        data.close()
    assert spill_files(tmp_path) == []


def test_a_bad_spill_folder_is_named(table_file, tmp_path):
    for spill_to, error, message in (
            (tmp_path / "nope", ValueError, "no such folder .*nope.* for the spill file"),
            (3, TypeError, r"must be True, False or a folder \(str or os.PathLike\), got int")):
        with pytest.raises(error, match=message):
            outofcore.fit(LinearRegressor(epochs=2, lr=0.01), Parquet(table_file, FEATURES, spill=spill_to), "t0")
