"""Inference on sparse X (``linreg.sparse.inference_rows``, ``kernels.cpu_sparse.robust_meat``): every covariance
type equals the dense result on the same numbers (1e-10 relative), X is never densified, and beyond the Gram
limit the error of the Gram solvers."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from linreg import LinearRegressor
from linreg import sparse as linreg_sparse
from linreg.inference import COV_TYPES
from linreg.training import IllConditionedWarning


def sparse_problem(n_samples=500, n_features=30, n_outputs=1, seed=0, heteroscedastic=True):
    rng = np.random.default_rng(seed)
    X = sp.random(n_samples, n_features, density=0.12, format="csr", random_state=seed, dtype=np.float64)
    X.data = X.data * 3 - 1
    noise = rng.standard_normal((n_samples, n_outputs)) * (1.0 + 2.0 * np.abs(X[:, :1].toarray()))
    Y = X @ rng.standard_normal((n_features, n_outputs)) + 0.5 + (noise if heteroscedastic else 0.1 * noise)
    return X, (Y[:, 0] if n_outputs == 1 else Y)


def assert_same_result(got, expected, rtol=1e-10):
    for name in ("params", "bse", "tvalues", "pvalues", "rsquared", "fvalue", "scale"):
        np.testing.assert_allclose(getattr(got, name), getattr(expected, name), rtol=rtol, atol=1e-300, err_msg=name)
    np.testing.assert_allclose(got.cov_params(), expected.cov_params(), rtol=rtol,
                               atol=rtol * np.abs(expected.cov_params()).max())


@pytest.mark.parametrize("cov_type", COV_TYPES)
@pytest.mark.parametrize("weighted, n_outputs", [(False, 1), (True, 1), (False, 3)])
def test_every_covariance_type_equals_the_dense_result(cov_type, weighted, n_outputs):
    X, y = sparse_problem(n_outputs=n_outputs, seed=1 + n_outputs)
    weights = np.random.default_rng(3).uniform(0.2, 3.0, X.shape[0]) if weighted else None
    model = LinearRegressor(solver="normal").fit(X, y, sample_weight=weights)
    got = model.inference(X, y, weights, cov_type=cov_type)
    expected = model.inference(X.toarray(), y, weights, cov_type=cov_type)
    assert got.cov_type == cov_type
    assert_same_result(got, expected)


@pytest.mark.parametrize("kind", ["csc_matrix", "csr_array", "float32"])
def test_other_sparse_kinds_give_the_same_result(kind):
    X, y = sparse_problem(seed=4)
    if kind == "float32":
        X, y = X.astype(np.float32), y.astype(np.float32)
        converted, rtol = X, 1e-9  # the same float32 numbers; float64 sums in a different order
    else:
        converted, rtol = getattr(sp, kind)(X), 1e-10
    before = converted.copy()
    model = LinearRegressor(solver="normal").fit(X.toarray(), y)
    assert_same_result(model.inference(converted, y, cov_type="HC3"), model.inference(X.toarray(), y,
                                                                                       cov_type="HC3"), rtol)
    assert (converted != before).nnz == 0  # not modified


def test_a_gradient_fit_at_the_optimum_gets_the_same_robust_inference():
    X, y = sparse_problem(seed=5)
    model = LinearRegressor(solver="gram", lr="auto", standardize=True, epochs=3000, tol=None).fit(X, y)
    assert_same_result(model.inference(X, y, cov_type="HC2"), model.inference(X.toarray(), y, cov_type="HC2"))


def test_rows_of_leverage_one_warn_as_for_dense_x():
    X, y = sparse_problem(seed=6)
    X = sp.hstack([X, sp.csr_matrix(([1.0], ([7], [0])), shape=(X.shape[0], 1))], format="csr")  # row 7 alone
    model = LinearRegressor(solver="normal").fit(X, y)
    for data in (X, X.toarray()):  # (its residual is ~0 too: the standard errors stay finite, but mean nothing)
        with pytest.warns(IllConditionedWarning, match="leverage 1"):
            model.inference(data, y, cov_type="HC3")


def test_beyond_the_gram_limit_inference_raises_the_solvers_error(monkeypatch):
    X, y = sparse_problem(seed=7)
    model = LinearRegressor(solver="normal").fit(X, y)
    monkeypatch.setattr(linreg_sparse, "GRAM_MAX_FEATURES", 20)
    with pytest.raises(ValueError, match=r"inference \(its covariances\) needs the dense \(n_features \+ 1\)\^2 "
                                         r"Gram matrix: sparse X has 30 features .* the sparse limit is 20"):
        model.inference(X, y, cov_type="HC0")
    with pytest.raises(ValueError, match=r"solver='normal' needs the dense \(n_features \+ 1\)\^2 Gram matrix"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            LinearRegressor(solver="normal").fit(X, y)


def test_x_is_never_densified(monkeypatch):
    X, y = sparse_problem(seed=8)
    model = LinearRegressor(solver="normal").fit(X, y)

    def refuse(*args, **kwargs):
        raise AssertionError("X was densified")

    for kind in (sp.csr_matrix, sp.csc_matrix, sp.coo_matrix):
        monkeypatch.setattr(kind, "toarray", refuse)
        monkeypatch.setattr(kind, "todense", refuse)
    for cov_type in COV_TYPES:
        model.inference(X, y, cov_type=cov_type)
