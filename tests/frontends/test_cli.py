"""``linreg train`` end to end: the default seed run, data files, plots, and bad arguments."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from linreg import cli


def train(capsys, *args):
    code = cli.main(["train", "--no-progress", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def row(out, name):
    """The numbers of a table row: [true, first run, second run, ...]."""
    return [float(v) for v in re.search(rf"^{re.escape(name)}\s+(.+)$", out, re.M).group(1).split()]


def test_default_run_is_seed_000_then_the_improved_run_in_a_fresh_process():
    """No arguments: seed 000's data and settings, a progress bar, then standardize + lr=auto beside it."""
    result = subprocess.run([sys.executable, "-m", "linreg", "train"], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    assert "500/500" in result.stderr and "loss=" in result.stderr  # tqdm with the live loss
    out = result.stdout
    assert "X (5000, 5) float32" in out and "500 epochs" in out and "lr=1e-05" in out
    for f, true in enumerate([2, 8, 1, 3, 6]):
        truth, seed_run, improved = row(out, f"w[{f}]")
        assert truth == true and abs(seed_run - true) < 0.02 and abs(improved - true) < 1e-3
    truth, seed_run, improved = row(out, "bias")
    assert truth == 4 and 1.0 < seed_run < 1.1 and abs(improved - 4) < 1e-3
    assert "final loss" in out and "wall time" in out and "standardize, lr=auto, 100 ep" in out


def test_table_matches_the_estimator(capsys):
    code, out, _ = train(capsys, "--epochs", "50", "--seed", "3")
    assert code == 0
    import linreg

    X, y = linreg.datasets.seed_linear(random_state=3)
    model = linreg.LinearRegressor(epochs=50, lr=1e-5).fit(X, y)  # the demo runs seed 000's step
    improved = linreg.LinearRegressor(epochs=100, standardize=True, lr="auto").fit(X, y)
    assert row(out, "w[1]")[1:] == pytest.approx([model.coef_[1], improved.coef_[1]], abs=1e-6)
    assert row(out, "bias")[1:] == pytest.approx([model.intercept_, improved.intercept_], abs=1e-6)


def test_no_compare_and_options_run_once(capsys):
    code, out, _ = train(capsys, "--epochs", "20", "--no-compare")
    assert code == 0 and len(row(out, "bias")) == 2
    code, out, _ = train(capsys, "--epochs", "30", "--standardize", "--lr", "auto")
    assert code == 0 and len(row(out, "bias")) == 2 and abs(row(out, "bias")[1] - 4) < 1e-3


@pytest.mark.parametrize("flags, params", [
    (["--optimizer", "adam", "--lr", "0.05", "--batch-size", "64", "--standardize", "--betas", "0.8", "0.99",
      "--amsgrad"],
     dict(optimizer="adam", lr=0.05, batch_size=64, standardize=True, betas=(0.8, 0.99), amsgrad=True)),
    (["--momentum", "0.9", "--nesterov", "--lr", "0.01", "--standardize", "--schedule", "cosine", "--no-shuffle",
      "--batch-size", "100", "--penalty", "elasticnet", "--alpha", "0.01", "--l1-ratio", "0.3"],
     dict(momentum=0.9, nesterov=True, lr=0.01, standardize=True, schedule="cosine", shuffle=False,
          batch_size=100, penalty="elasticnet", alpha=0.01, l1_ratio=0.3)),
    (["--solver", "normal", "--penalty", "l2", "--alpha", "0.5"], dict(solver="normal", penalty="l2", alpha=0.5)),
    (["--solver", "gram", "--lr", "auto", "--tol", "1e-9", "--n-iter-no-change", "2", "--standardize"],
     dict(solver="gram", lr="auto", tol=1e-9, n_iter_no_change=2, standardize=True)),
])
def test_option_flags_mirror_the_estimator(capsys, flags, params):
    import warnings

    import linreg

    code, out, _ = train(capsys, "--epochs", "40", "--no-compare", *flags)
    assert code == 0
    X, y = linreg.datasets.seed_linear(random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = linreg.LinearRegressor(epochs=40, random_state=0, **params).fit(X, y)
    assert row(out, "w[0]")[1] == pytest.approx(model.coef_[0], abs=1e-6)
    assert row(out, "bias")[1] == pytest.approx(model.intercept_, abs=1e-6)


def test_save_writes_a_loadable_model(capsys, tmp_path):
    import linreg

    path = tmp_path / "model.npz"
    code, out, _ = train(capsys, "--epochs", "10", "--no-compare", "--save", str(path))
    assert code == 0 and "model written to" in out
    model = linreg.load(path)
    assert model.n_iter_ == 10 and row(out, "bias")[1] == pytest.approx(model.intercept_, abs=1e-6)


def test_crops_and_plot(capsys, tmp_path):
    plot = tmp_path / "loss.png"
    code, out, _ = train(capsys, "--dataset", "crops", "--epochs", "20", "--init", "randn", "--plot", str(plot))
    assert code == 0 and "output 1:" in out and "this run" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_torch_backend(capsys):
    code, out, _ = train(capsys, "--epochs", "20", "--backend", "torch", "--no-compare")
    assert code == 0 and "backend 'torch'" in out


def write_table(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (200, 3))
    Y = X @ np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]]).T + [0.5, -1.0]
    return X, Y


def test_csv_with_named_targets(capsys, tmp_path):
    X, Y = write_table(tmp_path)
    path = tmp_path / "data.csv"
    np.savetxt(path, np.hstack([X, Y]), delimiter=",", header="a,b,c,price,volume", comments="")
    code, out, _ = train(capsys, "--dataset", str(path), "--target", "price,volume", "--epochs", "2000",
                         "--lr", "0.1")
    assert code == 0 and "output 1:" in out
    assert re.search(r"output 0:\s+w = \[\s+1\.0000\d*\s+-2\.0000\d*\s+0\.5000", out)


@pytest.mark.parametrize("kind", ["npy", "npz-table", "npz-Xy", "csv-no-header"])
def test_data_files(capsys, tmp_path, kind):
    X, Y = write_table(tmp_path)
    table = np.hstack([X, Y[:, :1]])
    if kind == "npy":
        path = tmp_path / "d.npy"
        np.save(path, table)
    elif kind == "npz-table":
        path = tmp_path / "d.npz"
        np.savez(path, data=table)
    elif kind == "npz-Xy":
        path = tmp_path / "d.npz"
        np.savez(path, X=X, y=Y[:, 0])
    else:
        path = tmp_path / "d.csv"
        np.savetxt(path, table, delimiter=",")
    code, out, _ = train(capsys, "--dataset", str(path), "--epochs", "2000", "--lr", "0.1")
    assert code == 0
    assert re.search(r"output 0:\s+w = \[\s+1\.0000\d*\s+-2\.0000\d*\s+0\.5000\d*\s*\]\s+b = 0\.5000", out)


@pytest.mark.parametrize("args, message", [
    (["--lr", "0"], "must be a finite number > 0"),
    (["--epochs", "0"], "must be >= 1"),
    (["--backend", "gpu"], "invalid choice"),
    (["--init", "random"], "invalid choice"),
    (["--dataset", "nope.csv"], "must be seed-linear, crops or an existing"),
    (["--solver", "normal", "--penalty", "l1"], "no closed form"),
    (["--optimizer", "adam", "--lr", "auto"], "needs optimizer='sgd'"),
    (["--penalty", "ridge"], "must be l2, l1, elasticnet or none"),
    (["--early-stopping"], "set tol"),
])
def test_bad_arguments_exit_2(capsys, args, message):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_data_files_exit_2(capsys, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n3,nan\n")
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--no-progress", "--dataset", str(path)])
    assert info.value.code == 2 and "y contains nan at row 1" in capsys.readouterr().err
    path.write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit):
        cli.main(["train", "--no-progress", "--dataset", str(path), "--target", "c"])
    assert "neither a column index nor a column name; columns are a, b" in capsys.readouterr().err


def test_divergence_exits_1(capsys):
    code, _, err = train(capsys, "--lr", "1", "--n-samples", "200")
    assert code == 1 and re.search(r"loss (exploded|became non-finite)", err) and "lr=1" in err


def test_a_data_file_trains_with_the_defaults_that_fit_any_data(capsys, tmp_path):
    """linreg train --dataset FILE uses LinearRegressor's defaults: the least-squares answer, no tuning."""
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 100, (2000, 3))
    y = X @ np.array([1.0, 2.0, 3.0]) + 5.0 + rng.standard_normal(2000)
    path = tmp_path / "d.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header="a,b,c,target", comments="")
    code, out, _ = train(capsys, "--dataset", str(path), "--target", "target")
    assert code == 0 and "this run" in out
    A = np.column_stack([X, np.ones(len(X))])
    exact = np.linalg.lstsq(A, y, rcond=None)[0]
    match = re.search(r"w = \[([^\]]+)\]\s+b = (\S+)", out)
    learned = [float(v) for v in match.group(1).split()] + [float(match.group(2))]
    np.testing.assert_allclose(learned, exact, rtol=1e-4, atol=1e-4)
