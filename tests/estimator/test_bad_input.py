"""Property-based bad input (hypothesis): every malformed input gets a documented exception, before any
work, and the caller's arrays are never modified.

Documented exceptions: ValueError and TypeError for bad input (NotFittedError and ModelFileError are
ValueErrors); DivergenceError when valid input makes the loss diverge (huge values, large lr); argparse's
exit code 2 on the command line.
"""

import contextlib
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import linreg
from linreg import LinearRegressor, cli
from linreg.kernels import cpu

DOCUMENTED = (ValueError, TypeError, linreg.DivergenceError)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_, np.complex128, object, "U3"]
SPECIAL = [np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-300, 0.0]


@st.composite
def arrays(draw, max_dims=3):
    ndim = draw(st.integers(0, max_dims))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = rng.standard_normal(shape) * draw(st.sampled_from([1.0, 1e3, 1e-3]))
    if values.size and draw(st.booleans()):
        values.flat[draw(st.integers(0, values.size - 1))] = draw(st.sampled_from(SPECIAL))
    if dtype == "U3":
        return values.astype("U3")
    with np.errstate(all="ignore"):
        return values.astype(dtype)


def well_formed(n_samples=6, n_features=2):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_samples, n_features))
    return X, X @ np.ones(n_features)


HYPER = {
    "lr": st.sampled_from([1e-3, 0.0, -1.0, np.nan, np.inf, 1e300, 1e-300, "fast", "auto", None, True]),
    "epochs": st.sampled_from([3, 0, -2, 2.5, np.nan, True, "3", None]),
    "batch_size": st.sampled_from([None, 2, 0, -1, 1.5, "2"]),
    "alpha": st.sampled_from([1e-4, -1.0, np.nan, np.inf]),
    "momentum": st.sampled_from([0.0, 0.5, -0.1, np.nan]),
    "betas": st.sampled_from([(0.9, 0.999), (1.0, 0.9), (0.9,), "ab", (np.nan, 0.9)]),
    "tol": st.sampled_from([None, 1e-3, -1.0, np.nan]),
    "validation_fraction": st.sampled_from([0.1, 0.0, 1.0, np.nan]),
    "solver": st.sampled_from(["gd", "normal", "gram", "sgd", None]),
    "optimizer": st.sampled_from(["sgd", "adam", "adamw", "lbfgs"]),
    "penalty": st.sampled_from([None, "l2", "l1", "elasticnet", "ridge"]),
    "schedule": st.sampled_from(["constant", "cosine", "adaptive", "warmup"]),
    "init": st.sampled_from(["ones", "zeros", "randn", "normal", (np.ones(2), 0.0), (np.ones(5), 0.0)]),
    "backend": st.sampled_from(["cpu", "torch", "gpu"]),
}


def assert_unchanged(before, after):
    assert type(before) is type(after)
    if isinstance(before, np.ndarray):
        assert before.dtype == after.dtype and before.shape == after.shape
        # Bytes: exact bits for numbers (NaNs included), the same referenced objects for object arrays.
        assert before.tobytes() == after.tobytes()


def snapshot(value):
    return value.copy() if isinstance(value, np.ndarray) else value


@SETTINGS
@given(X=arrays(), y=arrays(), weights=st.one_of(st.none(), arrays(max_dims=1)))
def test_fit_with_malformed_data(X, y, weights):
    copies = [snapshot(a) for a in (X, y, weights)]
    try:
        model = LinearRegressor(epochs=3, lr=1e-3).fit(X, y, sample_weight=weights)
    except DOCUMENTED as error:
        assert str(error)
    else:
        assert np.isfinite(model.coef_).all() and np.isfinite(model.intercept_).all()
    for before, after in zip(copies, (X, y, weights), strict=True):
        assert_unchanged(before, after)


@SETTINGS
@given(params=st.fixed_dictionaries({}, optional=HYPER))
def test_fit_with_malformed_hyper_parameters(params):
    X, y = well_formed()
    copies = X.copy(), y.copy()
    try:
        model = LinearRegressor(**{"epochs": 3, **params}).fit(X, y)
    except DOCUMENTED as error:
        assert str(error)
    except linreg.ConvergenceWarning:  # pragma: no cover - warnings are not errors
        raise
    else:
        assert np.isfinite(model.coef_).all()
    np.testing.assert_array_equal(X, copies[0])
    np.testing.assert_array_equal(y, copies[1])


@SETTINGS
@given(X=arrays(), Y=arrays(), W=arrays(), b=arrays())
def test_kernel_wrappers_with_malformed_arrays(X, Y, W, b):
    copies = [snapshot(a) for a in (X, Y, W, b)]
    for call in (lambda: cpu.loss(X, Y, W, b), lambda: cpu.predict(X, W, b),
                 lambda: cpu.loss_grad(X, Y, W, b, np.empty_like(W), np.empty_like(b))):
        try:
            call()
        except (ValueError, TypeError) as error:
            assert str(error)
    for before, after in zip(copies, (X, Y, W, b), strict=True):
        assert_unchanged(before, after)


TOKENS = ["--epochs", "--lr", "--batch-size", "--optimizer", "--penalty", "--alpha", "--solver", "--schedule",
          "--tol", "--early-stopping", "--standardize", "--dataset", "--target", "--n-samples", "--betas",
          "--init", "--backend", "--momentum", "--nesterov", "--no-compare",
          "0", "-1", "3", "1e-3", "nan", "inf", "auto", "adam", "l1", "none", "normal", "cosine", "adaptive",
          "crops", "nope.npy", "x,y", "ones", "gpu", "0.5", ""]


@settings(max_examples=50, deadline=None)
@given(argv=st.lists(st.sampled_from(TOKENS), max_size=6))
def test_cli_with_malformed_arguments(argv):
    """Exit 0 (valid), 1 (divergence, with a message) or 2 (bad input, a one-line message): never a traceback."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(["train", "--no-progress", "--n-samples", "50", *argv])
        except SystemExit as exit:
            code = exit.code
    err = err.getvalue()
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err
    if code == 2:
        assert "error:" in err
    if code == 1:
        assert "loss" in err and "lr=" in err


@pytest.mark.parametrize("path_content", [b"", b"\x93NUMPY garbage", b"PK\x03\x04 truncated zip"])
def test_malformed_model_and_checkpoint_bytes(tmp_path, path_content):
    path = tmp_path / "file.npz"
    path.write_bytes(path_content)
    with pytest.raises(linreg.ModelFileError):
        linreg.load(path)
    X, y = well_formed()
    with pytest.raises(linreg.ModelFileError):
        LinearRegressor(checkpoint_path=str(path)).fit(X, y, resume=True)
