"""LinearRegressor on scipy.sparse X (linreg.sparse): every option lands where the dense fit of the same numbers
lands (1e-10 relative in float64), the input kinds and edge shapes, the clear errors, partial_fit, predict and
score, scikit-learn's sparse checks, and bit-identical fits for 1 and 2 threads."""

import warnings

import numba
import numpy as np
import pytest
import scipy.sparse as sp

from linreg import LinearRegressor
from linreg import sparse as linreg_sparse
from linreg.kernels import cpu


def sparse_problem(n_samples=400, n_features=25, density=0.15, n_outputs=1, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n_samples, n_features, density=density, format="csr", random_state=seed, dtype=np.float64)
    X.data = (X.data * 3 + 0.5).astype(dtype)
    W = rng.standard_normal((n_outputs, n_features))
    Y = X @ W.T + 0.5 + 0.1 * rng.standard_normal((n_samples, n_outputs))
    y = (Y[:, 0] if n_outputs == 1 else Y).astype(dtype)
    return X, y


def fit_both(X, y, sample_weight=None, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of short fits: the same for both
        got = LinearRegressor(**options).fit(X, y, sample_weight=sample_weight)
        expected = LinearRegressor(**options).fit(X.toarray(), y, sample_weight=sample_weight)
    return got, expected


def assert_same_fit(got, expected, rtol):
    scale = float(np.abs(expected.coef_).max())
    np.testing.assert_allclose(got.coef_, expected.coef_, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(got.intercept_, expected.intercept_, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(got.loss_history_, expected.loss_history_, rtol=rtol)
    assert got.n_iter_ == expected.n_iter_
    assert got.stop_reason_ == expected.stop_reason_
    np.testing.assert_allclose(got.lr_ if got.lr_ is not None else 0.0,
                               expected.lr_ if expected.lr_ is not None else 0.0, rtol=1e-12)
    assert got.coef_.dtype == expected.coef_.dtype


OPTIONS = [
    pytest.param({}, id="defaults"),
    pytest.param({"lr": 0.05, "epochs": 40, "standardize": False}, id="plain-gd"),
    pytest.param({"lr": 0.05, "epochs": 40, "standardize": True}, id="standardize-numeric-lr"),
    pytest.param({"batch_size": 32, "random_state": 0, "epochs": 15}, id="minibatch-shuffled"),
    pytest.param({"batch_size": 150, "shuffle": False, "epochs": 15}, id="large-batches-in-order"),
    pytest.param({"optimizer": "adam", "lr": 0.05, "epochs": 40}, id="adam"),
    pytest.param({"optimizer": "adamw", "lr": 0.05, "weight_decay": 0.01, "amsgrad": True, "epochs": 30},
                 id="adamw-amsgrad"),
    pytest.param({"momentum": 0.9, "nesterov": True, "lr": 0.01, "epochs": 40}, id="nesterov"),
    pytest.param({"penalty": "l2", "alpha": 0.01, "epochs": 60}, id="l2"),
    pytest.param({"penalty": "l1", "alpha": 0.001, "epochs": 60}, id="l1"),
    pytest.param({"penalty": "elasticnet", "alpha": 0.01, "l1_ratio": 0.5, "epochs": 60}, id="elasticnet"),
    pytest.param({"schedule": "cosine", "epochs": 50}, id="cosine"),
    pytest.param({"schedule": "invscaling", "batch_size": 40, "random_state": 1, "epochs": 10}, id="invscaling"),
    pytest.param({"schedule": "adaptive", "tol": 1e-3, "epochs": 200}, id="adaptive"),
    pytest.param({"tol": 1e-4, "epochs": 300}, id="tol"),
    pytest.param({"early_stopping": True, "tol": 1e-5, "random_state": 2, "epochs": 100}, id="early-stopping"),
    pytest.param({"early_stopping": True, "tol": 1e-4, "batch_size": 64, "random_state": 3, "epochs": 20},
                 id="early-stopping-minibatch"),
    pytest.param({"solver": "normal"}, id="normal"),
    pytest.param({"solver": "normal", "penalty": "l2", "alpha": 0.1, "standardize": True}, id="normal-ridge-std"),
    pytest.param({"solver": "gram", "epochs": 80}, id="gram"),
    pytest.param({"init": "randn", "random_state": 4, "epochs": 30}, id="randn-init"),
]


@pytest.mark.parametrize("options", OPTIONS)
def test_fit_equals_the_dense_fit_in_float64(options):
    X, y = sparse_problem()
    got, expected = fit_both(X, y, **options)
    assert_same_fit(got, expected, 1e-10)
    np.testing.assert_allclose(got.predict(X), expected.predict(X.toarray()), rtol=1e-10, atol=1e-10)
    assert got.score(X, y) == pytest.approx(expected.score(X.toarray(), y), rel=1e-10)


@pytest.mark.parametrize("options", [pytest.param({}, id="defaults"),
                                     pytest.param({"batch_size": 50, "random_state": 0, "epochs": 10}, id="sgd"),
                                     pytest.param({"solver": "normal"}, id="normal")])
def test_weighted_and_multi_output_fits_equal_the_dense_fit(options):
    X, Y = sparse_problem(n_outputs=3, seed=5)
    weights = np.random.default_rng(6).uniform(0, 2, X.shape[0])
    got, expected = fit_both(X, Y, sample_weight=weights, **options)
    assert_same_fit(got, expected, 1e-10)
    assert got.coef_.shape == (3, X.shape[1])
    assert got.score(X, Y, sample_weight=weights) == pytest.approx(
        expected.score(X.toarray(), Y, sample_weight=weights), rel=1e-10)


@pytest.mark.parametrize("options", [pytest.param({}, id="defaults"),
                                     pytest.param({"batch_size": 32, "random_state": 0, "epochs": 10}, id="sgd")])
def test_float32_fit_equals_the_dense_float32_fit(options):
    X, y = sparse_problem(dtype=np.float32, seed=7)
    got, expected = fit_both(X, y, **options)
    assert got.coef_.dtype == np.float32 and got.predict(X).dtype == np.float32
    assert_same_fit(got, expected, 2e-5)


@pytest.mark.parametrize("kind", ["csc_matrix", "csr_array", "csc_array", "coo_matrix", "lil_matrix", "dok_matrix",
                                  "int64 indices", "unsorted indices", "integer data"])
def test_every_input_kind_gives_the_csr_fit(kind):
    X, y = sparse_problem(seed=8)
    if kind == "int64 indices":
        converted = X.copy()
        converted.indices, converted.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
    elif kind == "unsorted indices":
        converted = X.copy()
        for i in range(X.shape[0]):
            lo, hi = X.indptr[i], X.indptr[i + 1]
            converted.indices[lo:hi], converted.data[lo:hi] = X.indices[lo:hi][::-1], X.data[lo:hi][::-1]
        converted.has_sorted_indices = False
    elif kind == "integer data":
        X = sp.csr_matrix((np.round(X.data * 3).astype(np.int64), X.indices, X.indptr), shape=X.shape)
        converted, y = X, y.astype(np.float32)
    else:
        converted = getattr(sp, kind)(X)
    before = converted.copy()
    got, expected = fit_both(converted, y, epochs=30)
    # float32 ("integer data" with float32 y): the dense fit's tiled kernel sums the gradient in short
    # float32 partials (issue 15's accuracy contract, 1e-6), so the two fits agree to float32 rounding only.
    assert_same_fit(got, expected, 1e-10 if got.coef_.dtype == np.float64 else 1e-6)
    if kind == "integer data":  # as dense integer data (with float32 y): float32
        assert got.coef_.dtype == np.float32
    np.testing.assert_allclose(got.predict(converted), expected.predict(X.toarray()), rtol=1e-6, atol=1e-6)
    assert (converted != before).nnz == 0 and converted.format == before.format  # the input is not modified


@pytest.mark.parametrize("shape", ["one sample", "one feature", "empty rows and columns", "all zero",
                                   "explicit zeros"])
def test_edge_shapes_fit_as_the_dense_matrix(shape):
    X, y = sparse_problem(n_samples=60, n_features=6, density=0.4, seed=9)
    options = {"epochs": 20}
    if shape == "one sample":
        X, y, options = X[:1], y[:1], {"epochs": 5, "lr": 0.01, "standardize": False}
        if X.nnz == 0:
            X = sp.csr_matrix(np.ones((1, 6)))
    elif shape == "one feature":
        X = sp.csr_matrix(X[:, :1])
    elif shape == "empty rows and columns":
        D = X.toarray()
        D[::3] = 0.0
        D[:, 2] = 0.0
        X = sp.csr_matrix(D)
    elif shape == "all zero":
        X = sp.csr_matrix(X.shape)
    else:
        X = X.copy()
        X.data[::2] = 0.0
    got, expected = fit_both(X, y, **options)
    assert_same_fit(got, expected, 1e-10)


def test_partial_fit_equals_the_dense_partial_fit():
    X, y = sparse_problem(seed=10)
    sparse_model = LinearRegressor(lr=0.05, batch_size=40, random_state=0, standardize=False)
    dense_model = LinearRegressor(lr=0.05, batch_size=40, random_state=0, standardize=False)
    default_step_sparse, default_step_dense = LinearRegressor(), LinearRegressor()
    for start in (0, 200):
        part = slice(start, start + 200)
        sparse_model.partial_fit(X[part], y[part])
        dense_model.partial_fit(X[part].toarray(), y[part])
        default_step_sparse.partial_fit(X[part], y[part])
        default_step_dense.partial_fit(X[part].toarray(), y[part])
    assert_same_fit(sparse_model, dense_model, 1e-10)
    assert_same_fit(default_step_sparse, default_step_dense, 1e-10)


def test_warm_start_and_checkpoints_work_on_sparse_x(tmp_path):
    X, y = sparse_problem(seed=11)
    path = str(tmp_path / "fit.npz")
    whole = LinearRegressor(epochs=40, lr=0.05).fit(X, y)
    first = LinearRegressor(epochs=20, lr=0.05, checkpoint_path=path).fit(X, y)
    resumed = LinearRegressor(epochs=40, lr=0.05, checkpoint_path=path).fit(X, y, resume=True)
    np.testing.assert_array_equal(resumed.coef_, whole.coef_)
    assert first.n_iter_ == 20
    with pytest.raises(ValueError, match="made on different data"):  # another matrix: the fingerprint differs
        other = X.copy()
        other.data[0] += 1.0
        LinearRegressor(epochs=40, lr=0.05, checkpoint_path=path).fit(other, y, resume=True)


def test_many_features_use_lanczos_for_lr_auto(monkeypatch):
    """Beyond GRAM_MAX_FEATURES no (F+1)^2 Gram matrix: lr="auto" from Lanczos, the exact step."""
    X, y = sparse_problem(n_features=20, seed=12)  # 21 Lanczos steps span the whole space: the exact eigenvalue
    exact = LinearRegressor(epochs=30).fit(X, y)
    monkeypatch.setattr(linreg_sparse, "GRAM_MAX_FEATURES", 10)
    for options in ({}, {"standardize": False}, {"early_stopping": True, "random_state": 0, "tol": 1e-4}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            iterated = LinearRegressor(epochs=30, **options).fit(X, y)
            dense = LinearRegressor(epochs=30, **options).fit(X.toarray(), y)
        np.testing.assert_allclose(iterated.lr_, dense.lr_, rtol=1e-8)
        assert iterated.lr_ >= dense.lr_ * (1 - 1e-12)  # a Ritz value: the eigenvalue from below
    np.testing.assert_allclose(LinearRegressor(epochs=30).fit(X, y).coef_, exact.coef_, rtol=1e-6)
    with pytest.raises(ValueError, match=r"solver='normal' needs the dense \(n_features \+ 1\)\^2 Gram matrix: "
                                         r"sparse X has 20 features.*Use solver='gd'"):
        LinearRegressor(solver="normal").fit(X, y)
    with pytest.raises(ValueError, match="solver='gram' needs the dense"):
        LinearRegressor(solver="gram").fit(X, y)


def test_options_that_cannot_work_sparse_are_clear_errors():
    X, y = sparse_problem(seed=13)
    with pytest.raises(ValueError, match="sparse X trains on backend='cpu'.*got backend='torch'"):
        LinearRegressor(backend="torch").fit(X, y)
    with pytest.raises(TypeError, match=r"y is a sparse matrix \(csr_matrix\): only X may be sparse.*y\.toarray\(\)"):
        LinearRegressor().fit(X, sp.csr_matrix(y[:, None]))
    with pytest.raises(TypeError, match="sample_weight is a sparse matrix"):
        LinearRegressor().fit(X, y, sample_weight=sp.csr_matrix(np.ones((1, X.shape[0]))))


def test_bad_sparse_input_is_named_before_any_work():
    X, y = sparse_problem(n_samples=50, n_features=5, density=0.5, seed=14)
    bad = X.copy()
    bad.data[7] = np.nan
    row = int(np.searchsorted(bad.indptr, 7, side="right") - 1)
    with pytest.raises(ValueError, match=rf"X contains nan at row {row}, column {bad.indices[7]}"):
        LinearRegressor().fit(bad, y)
    bad.data[7] = np.inf
    with pytest.raises(ValueError, match="X contains inf"):
        LinearRegressor(solver="normal").fit(bad, y)
    with pytest.raises(ValueError, match="X contains nan"):
        LinearRegressor().fit(X, y).predict(sp.csr_matrix(([np.nan], ([0], [1])), shape=(2, 5)))
    with pytest.raises(TypeError, match="X must hold real numbers.*complex128"):
        LinearRegressor().fit(X.astype(np.complex128), y)
    with pytest.raises(ValueError, match="X and y must have the same number of samples"):
        LinearRegressor().fit(X, y[:-1])
    with pytest.raises(ValueError, match="X is empty: 0 sample"):
        LinearRegressor().fit(sp.csr_matrix((0, 5)), y[:0])
    with pytest.raises(ValueError, match="X has no features"):
        LinearRegressor().fit(sp.csr_matrix((50, 0)), y)
    model = LinearRegressor(epochs=5).fit(X, y)
    with pytest.raises(ValueError, match="X has 4 features, but LinearRegressor is expecting 5"):
        model.predict(X[:, :4])
    with pytest.raises(ValueError, match="X has 4 features"):
        model.partial_fit(X[:, :4], y)


def test_predict_of_sparse_after_a_dense_fit_and_back():
    X, y = sparse_problem(seed=15)
    dense = LinearRegressor(epochs=20).fit(X.toarray(), y)
    np.testing.assert_allclose(dense.predict(X), dense.predict(X.toarray()), rtol=1e-12)
    float32_model = LinearRegressor(epochs=20).fit(X.astype(np.float32), y.astype(np.float32))
    assert float32_model.predict(X.astype(np.float32)).dtype == np.float32
    assert float32_model.predict(X).dtype == np.float64  # promoted as dense X is


def test_fits_are_bit_identical_for_one_and_two_threads(monkeypatch):
    monkeypatch.setattr(cpu, "CHUNK_ROWS", 64)
    monkeypatch.setattr(cpu, "PARALLEL_MIN_WORK", 0)
    X, y = sparse_problem(n_samples=2000, n_features=300, density=0.02, seed=16)
    results = []
    warnings.simplefilter("ignore")  # the short early-stopped fit's ConvergenceWarning (pytest restores filters)
    for threads in (1, 2):
        numba.set_num_threads(threads)
        try:
            results.append([LinearRegressor(**options).fit(X, y).coef_.tobytes()
                            for options in ({"epochs": 20}, {"batch_size": 700, "random_state": 0, "epochs": 3},
                                            {"early_stopping": True, "tol": 1e-4, "random_state": 0, "epochs": 10})])
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert results[0] == results[1]


def test_scikit_learns_sparse_checks_pass():
    checks = pytest.importorskip("sklearn.utils.estimator_checks")
    assert LinearRegressor().__sklearn_tags__().input_tags.sparse
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checks.check_estimator_sparse_matrix("LinearRegressor", LinearRegressor(epochs=20))
        checks.check_estimator_sparse_array("LinearRegressor", LinearRegressor(epochs=20))
        checks.check_estimator_sparse_tag("LinearRegressor", LinearRegressor(epochs=20))
        checks.check_sample_weight_equivalence_on_sparse_data("LinearRegressor", LinearRegressor(epochs=20))


def test_inference_from_the_kept_statistics_equals_the_dense_fits():
    """A default fit computed the Gram statistics (lr="auto"): inference needs no data, sparse or dense."""
    X, y = sparse_problem(seed=17)
    got = LinearRegressor(solver="normal").fit(X, y).inference()
    expected = LinearRegressor(solver="normal").fit(X.toarray(), y).inference()
    np.testing.assert_allclose(got.bse, expected.bse, rtol=1e-10)
    np.testing.assert_allclose(got.params, expected.params, rtol=1e-10)
    # With the data (the robust types need it), sparse X too: tests/inference/test_sparse_inference.py.
    np.testing.assert_allclose(LinearRegressor(solver="normal").fit(X, y).inference(X, y, cov_type="HC1").bse,
                               LinearRegressor(solver="normal").fit(X.toarray(), y).inference(
                                   X.toarray(), y, cov_type="HC1").bse, rtol=1e-10)


@pytest.mark.parametrize("options", [pytest.param({}, id="defaults"),
                                     pytest.param({"batch_size": 16, "random_state": 0, "lr": 0.01}, id="sgd")])
def test_after_prepare_fit_a_sparse_fit_compiles_nothing(options):
    """prepare_fit (also called by fit itself) warms up on the sparse rows: the fit's time is training only."""
    from linreg import compilation

    X, y = sparse_problem(n_samples=300, seed=18)
    X = X.astype(np.float32)  # a variant no other test here prepares first
    model = LinearRegressor(epochs=3, **options)
    result = compilation.prepare_fit(model, X, y.astype(np.float32))
    assert not result.skipped and result.what.startswith("float32")
    with compilation._CompileWatch(None) as watch:
        model.fit(X, y.astype(np.float32))
    assert watch.compiled == 0, f"the fit compiled {watch.compiled} kernel(s) that prepare_fit did not"
