"""``linreg train --dataset X.npz --target-file y.npy`` with a ``scipy.sparse.save_npz`` matrix: trained in memory
on the sparse rows, the same model as ``LinearRegressor().fit`` on that matrix, and clear errors."""

import numpy as np
import pytest
import scipy.sparse as sp

import linreg
from linreg import cli


def write_sparse(tmp_path, n_samples=300, n_features=40, n_outputs=1, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n_samples, n_features, density=0.1, format="csr", random_state=seed, dtype=np.float64)
    X.data = X.data * 2 + 0.5
    Y = X @ rng.standard_normal((n_features, n_outputs)) + 0.5 + 0.05 * rng.standard_normal((n_samples, n_outputs))
    y = Y[:, 0] if n_outputs == 1 else Y
    weights = rng.uniform(0.5, 2.0, n_samples)
    sp.save_npz(tmp_path / "X.npz", X)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "w.npy", weights)
    return X, y, weights


def train(capsys, *args):
    code = cli.main(["train", "--no-progress", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("weighted", [False, True])
def test_a_sparse_npz_trains_the_model_the_estimator_fits(capsys, tmp_path, weighted):
    X, y, weights = write_sparse(tmp_path)
    args = ["--dataset", str(tmp_path / "X.npz"), "--target-file", str(tmp_path / "y.npy"), "--solver", "normal",
            "--save", str(tmp_path / "model.npz"), "--summary", "HC1"]
    if weighted:
        args += ["--weight-file", str(tmp_path / "w.npy")]
    code, out, err = train(capsys, *args)
    assert code == 0, err
    assert "X (300, 40) float64" in out and "(21 more)" in out  # 40 weights: the table shows the first 19
    assert "Standard Errors are heteroscedasticity robust (HC1)" in out
    model = linreg.load(tmp_path / "model.npz")
    expected = linreg.LinearRegressor(solver="normal").fit(X, y, sample_weight=weights if weighted else None)
    np.testing.assert_allclose(model.coef_, expected.coef_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model.intercept_, expected.intercept_, rtol=1e-12)


def test_a_sparse_npz_trains_by_gradient_descent_too(capsys, tmp_path):
    X, y, _ = write_sparse(tmp_path, n_outputs=2, seed=1)
    code, out, err = train(capsys, "--dataset", str(tmp_path / "X.npz"), "--target-file", str(tmp_path / "y.npy"),
                           "--batch-size", "16", "--lr", "0.01", "--epochs", "5", "--save", str(tmp_path / "m.npz"))
    assert code == 0, err
    assert "output 1:" in out
    model = linreg.load(tmp_path / "m.npz")
    expected = linreg.LinearRegressor(batch_size=16, lr=0.01, epochs=5, random_state=0).fit(X, y)
    np.testing.assert_array_equal(model.coef_, expected.coef_)


@pytest.mark.parametrize("extra, message", [
    ([], "holds no target column: give the targets as --target-file"),
    (["--target-file", "y.npy", "--target", "0"], "trains in memory on one process"),
    (["--target-file", "y.npy", "--distributed"], "trains in memory on one process"),
    (["--target-file", "short.npy"], r"has shape \(10,\), but the sparse matrix .* has 300 rows"),
    (["--target-file", "y.csv"], "--target-file must be a .npy file"),
    (["--target-file", "y.npy", "--weight-file", "short.npy"], r"--weight-file .* has shape \(10,\)"),
])
def test_bad_sparse_arguments_say_what_to_give(capsys, tmp_path, extra, message):
    write_sparse(tmp_path)
    np.save(tmp_path / "short.npy", np.ones(10))
    (tmp_path / "y.csv").write_text("1\n")
    extra = [str(tmp_path / a) if a.endswith((".npy", ".csv")) else a for a in extra]
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--no-progress", "--dataset", str(tmp_path / "X.npz"), *extra])
    assert info.value.code == 2
    assert __import__("re").search(message, capsys.readouterr().err)


def test_a_plain_npz_archive_is_not_taken_for_a_sparse_matrix(tmp_path):
    from linreg import sparse

    np.savez(tmp_path / "table.npz", X=np.ones((3, 2)), y=np.ones(3))
    write_sparse(tmp_path)
    assert sparse.is_sparse_file(tmp_path / "X.npz")
    assert not sparse.is_sparse_file(tmp_path / "table.npz")
    assert not sparse.is_sparse_file(tmp_path / "missing.npz")
