"""Inference (``LinearRegressor.inference``, ``linreg.inference``) against statsmodels OLS / WLS.

Tolerances (the issue's): parameters, standard errors, t values, intervals and
F within 1e-8 relative (element-wise) on float64 data; p-values within 1e-10
absolute. Measured here: ~1e-12 relative (diabetes, whose columns are the least
well conditioned of these cases), ~1e-14 elsewhere. statsmodels is run with
``use_t=True`` for the HC types, because linreg uses Student's t for every
covariance type (statsmodels' default for HC is the normal distribution).
"""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_linnerud

from linreg import IllConditionedWarning, LinearRegressor, NotFittedError, cli, inference, load, outofcore
from linreg.kernels import cpu, cpu_stats

sm = pytest.importorskip("statsmodels.api")

COV_TYPES = inference.COV_TYPES
RTOL, P_ATOL = 1e-8, 1e-10


def statsmodels_fit(X, y, weights=None, cov_type="nonrobust"):
    exog = sm.add_constant(np.asarray(X, np.float64), has_constant="add")
    model = sm.OLS(y, exog) if weights is None else sm.WLS(y, exog, weights=weights)
    return model.fit(cov_type=cov_type, use_t=True)


def assert_matches(ours, theirs, what=""):
    """Every statistic of one output against statsmodels at the issue's tolerances."""
    for name in ("params", "bse", "tvalues"):
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=RTOL, atol=0,
                                   err_msg=f"{what} {name}")
    np.testing.assert_allclose(ours.conf_int(), theirs.conf_int(), rtol=RTOL, atol=0, err_msg=f"{what} conf_int")
    np.testing.assert_allclose(ours.conf_int(0.1), theirs.conf_int(0.1), rtol=RTOL, atol=0, err_msg=f"{what} ci 0.1")
    np.testing.assert_allclose(ours.cov_params(), theirs.cov_params(), rtol=1e-7, atol=1e-12 * np.abs(
        theirs.cov_params()).max(), err_msg=f"{what} cov_params")
    np.testing.assert_allclose(ours.pvalues, theirs.pvalues, rtol=0, atol=P_ATOL, err_msg=f"{what} pvalues")
    np.testing.assert_allclose(ours.fvalue, theirs.fvalue, rtol=RTOL, err_msg=f"{what} fvalue")
    assert abs(ours.f_pvalue - theirs.f_pvalue) <= P_ATOL, what
    for name in ("rsquared", "rsquared_adj", "scale", "ssr", "centered_tss", "ess"):
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=RTOL, err_msg=f"{what} {name}")
    assert (ours.nobs, ours.df_model, ours.df_resid) == (theirs.nobs, theirs.df_model, theirs.df_resid), what
    np.testing.assert_allclose(ours.condition_number, theirs.condition_number, rtol=1e-6)


class Row:
    """One output's statistics of a multi-output result, named like statsmodels' results."""

    def __init__(self, result, o):
        self.result, self.o = result, o

    def __getattr__(self, name):
        value = getattr(self.result, name)
        return value[self.o] if isinstance(value, np.ndarray) else value

    def conf_int(self, alpha=None):
        return self.result.conf_int(alpha)[self.o]

    def cov_params(self):
        return self.result.cov_params()[self.o]


def heteroskedastic(n=3000, n_features=4, n_outputs=1, seed=0):
    """Offset, unevenly scaled columns and noise whose spread grows with |x_0|."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features)) * np.arange(1, n_features + 1) + 3.0
    W = rng.uniform(-2, 2, (n_outputs, n_features))
    noise = rng.standard_normal((n, n_outputs)) * (0.2 + np.abs(X[:, :1] - 3.0))
    Y = X @ W.T + 1.5 + noise
    return X, Y[:, 0] if n_outputs == 1 else Y


# --------------------------------------------------------------------------- equal to statsmodels


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_diabetes_equals_statsmodels_ols(cov_type):
    X, y = load_diabetes(return_X_y=True)
    model = LinearRegressor(solver="normal").fit(X, y)
    ours = model.inference(X, y, cov_type=cov_type)
    assert_matches(ours, statsmodels_fit(X, y, cov_type=cov_type), cov_type)
    assert ours.cov_type == cov_type and ours.params.shape == (11,) and np.ndim(ours.rsquared) == 0
    np.testing.assert_allclose(ours.params[1:], model.coef_, rtol=1e-12)
    np.testing.assert_allclose(ours.params[0], model.intercept_, rtol=1e-12)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_linnerud_several_outputs_give_one_row_per_output(cov_type):
    X, Y = load_linnerud(return_X_y=True)
    result = LinearRegressor(solver="normal").fit(X, Y).inference(X, Y, cov_type=cov_type)
    k = X.shape[1] + 1
    assert result.params.shape == result.bse.shape == result.pvalues.shape == (3, k)
    assert result.conf_int().shape == (3, k, 2) and result.cov_params().shape == (3, k, k)
    assert result.rsquared.shape == result.fvalue.shape == result.scale.shape == (3,)
    for o in range(3):
        assert_matches(Row(result, o), statsmodels_fit(X, Y[:, o], cov_type=cov_type), f"{cov_type} output {o}")


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_weighted_heteroskedastic_equals_statsmodels_wls(cov_type):
    X, Y = heteroskedastic(n_outputs=2)
    weights = np.random.default_rng(1).uniform(0.2, 3.0, X.shape[0])
    weights[:7] = 0.0  # zero-weight rows still count in nobs, as in statsmodels
    result = LinearRegressor(solver="normal").fit(X, Y, sample_weight=weights).inference(X, Y, weights,
                                                                                          cov_type=cov_type)
    for o in range(2):
        assert_matches(Row(result, o), statsmodels_fit(X, Y[:, o], weights, cov_type), f"{cov_type} output {o}")


def test_robust_and_classical_errors_differ_on_heteroskedastic_noise():
    """The test data do what they are for: HC standard errors are not the classical ones."""
    X, y = heteroskedastic()
    model = LinearRegressor(solver="normal").fit(X, y)
    classical, robust = model.inference().bse, model.inference(X, y, cov_type="HC3").bse
    assert np.abs(robust / classical - 1).max() > 0.2


def test_float32_million_rows_keep_float64_accuracy():
    rng = np.random.default_rng(7)
    n = 1_000_000
    X = (rng.standard_normal((n, 3)) * [1.0, 2.0, 0.5] + 2.0).astype(np.float32)
    y = (X @ np.array([1.5, -0.5, 2.0]) + 0.3 + (0.5 + np.abs(X[:, 0] - 2)) * rng.standard_normal(n)).astype(
        np.float32)
    model = LinearRegressor(solver="normal").fit(X, y)
    assert model.coef_.dtype == np.float32
    for cov_type in ("nonrobust", "HC3"):
        ours = model.inference(X, y, cov_type=cov_type)
        assert_matches(ours, statsmodels_fit(X.astype(np.float64), y.astype(np.float64), cov_type=cov_type),
                       cov_type)


def test_nonrobust_needs_no_data_after_a_fit_that_computed_the_gram_statistics():
    X, y = heteroskedastic()
    for options in ({"solver": "normal"}, {"solver": "normal", "standardize": True}):
        model = LinearRegressor(**options).fit(X, y)
        without, with_data = model.inference(), model.inference(X, y)
        np.testing.assert_array_equal(without.bse, with_data.bse)
        assert_matches(without, statsmodels_fit(X, y), str(options))


def test_a_converged_gradient_fit_reports_its_own_parameters():
    X, y = load_diabetes(return_X_y=True)
    model = LinearRegressor(solver="gram", standardize=True, lr="auto", epochs=20000).fit(X, y)
    ours, theirs = model.inference(), statsmodels_fit(X, y)
    assert not ours.exact and ours.optimum_distance <= inference.OPTIMUM_TOL_SE
    np.testing.assert_array_equal(ours.params, np.r_[model.intercept_, model.coef_])
    assert np.abs(ours.params - theirs.params).max() <= 1e-3 * theirs.bse.min()
    np.testing.assert_allclose(ours.bse, theirs.bse, rtol=1e-6)
    # A streaming GD fit keeps no Gram statistics: it needs the data, and gives the same numbers.
    streamed = LinearRegressor(standardize=True, lr=model.lr_, epochs=20000).fit(X, y)  # a numeric lr
    with pytest.raises(ValueError, match="keeps no Gram statistics"):
        streamed.inference()
    np.testing.assert_allclose(streamed.inference(X, y).bse, theirs.bse, rtol=1e-6)


# --------------------------------------------------------------------------- out of core and files


@pytest.fixture
def npy_files(tmp_path):
    X, Y = heteroskedastic(n=2501, n_outputs=2, seed=3)
    weights = np.random.default_rng(2).uniform(0.5, 2.0, X.shape[0])
    paths = {name: tmp_path / f"{name}.npy" for name in ("X", "Y", "w")}
    for name, values in (("X", X), ("Y", Y), ("w", weights)):
        np.save(paths[name], values)
    return X, Y, weights, paths


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_out_of_core_equals_in_memory(npy_files, monkeypatch, cov_type):
    X, Y, weights, paths = npy_files
    monkeypatch.setattr(outofcore, "CHUNK_BYTES", 16_000)  # ~200 rows a chunk: many chunks
    in_memory = LinearRegressor(solver="normal").fit(X, Y, weights).inference(X, Y, weights, cov_type=cov_type)
    streamed_model = LinearRegressor(solver="normal").fit(str(paths["X"]), str(paths["Y"]), str(paths["w"]))
    streamed = streamed_model.inference(str(paths["X"]), str(paths["Y"]), str(paths["w"]), cov_type=cov_type)
    memmaps = [np.load(paths[name], mmap_mode="r") for name in ("X", "Y", "w")]
    mapped = LinearRegressor(solver="normal").fit(X, Y, weights).inference(*memmaps, cov_type=cov_type)
    for other in (streamed, mapped):
        for name in ("params", "bse", "tvalues", "pvalues"):
            np.testing.assert_allclose(getattr(other, name), getattr(in_memory, name), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(other.fvalue, in_memory.fvalue, rtol=1e-12)
    assert_matches(Row(streamed, 1), statsmodels_fit(X, Y[:, 1], weights, cov_type), cov_type)


def test_a_loaded_model_needs_the_data_and_the_file_format_is_unchanged(npy_files, tmp_path):
    X, Y, weights, paths = npy_files
    model = LinearRegressor(solver="normal").fit(X, Y, weights)
    model.save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz", allow_pickle=False) as stored:
        assert sorted(stored.files) == ["coef", "intercept", "loss_history", "meta"]
        assert "gram" not in json.dumps(json.loads(str(stored["meta"]))).lower()
    loaded = load(tmp_path / "model.npz")
    with pytest.raises(ValueError, match="keeps no Gram statistics.*pass the data it was fitted on"):
        loaded.inference()
    np.testing.assert_allclose(loaded.inference(X, Y, weights).bse, model.inference().bse, rtol=1e-12)
    np.testing.assert_allclose(loaded.inference(str(paths["X"]), str(paths["Y"]), str(paths["w"])).bse,
                               model.inference().bse, rtol=1e-12)


# --------------------------------------------------------------------------- refusals, warnings, bad input


def test_an_unconverged_gradient_fit_is_refused_naming_the_distance_and_the_gradient_norm():
    X, y = load_diabetes(return_X_y=True)
    model = LinearRegressor(standardize=True, lr="auto", epochs=50).fit(X, y)
    with pytest.raises(inference.NotConvergedError, match=r"standard errors from it \(the gradient norm of the "
                                                          r"loss there is .*at most 0.001.*solver='normal'"):
        model.inference(X, y)


def test_seed_000_default_fit_is_refused():
    from linreg import datasets

    X, y = datasets.seed_linear(random_state=0)
    with pytest.raises(inference.NotConvergedError, match="not the least-squares optimum"):
        LinearRegressor(epochs=20, lr=1e-5).fit(X, y).inference(X, y)


@pytest.mark.parametrize("options, message", [
    ({"solver": "normal", "penalty": "l2", "alpha": 0.1}, "penalty='l2'"),
    ({"solver": "gram", "lr": "auto", "penalty": "l1", "alpha": 0.01}, "penalty='l1'"),
    ({"optimizer": "adamw", "lr": 0.01, "epochs": 5}, "weight_decay=0.01"),
    ({"lr": "auto", "standardize": True, "early_stopping": True, "tol": 1e-3, "epochs": 5}, "early_stopping"),
])
def test_penalised_and_early_stopped_fits_are_refused(options, message):
    X, y = heteroskedastic(n=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LinearRegressor(**options).fit(X, y)
    with pytest.raises(ValueError, match=message):
        model.inference(X, y)


def test_missing_or_mismatched_data_is_a_clear_error():
    X, y = heteroskedastic(n=300)
    weights = np.linspace(0.5, 1.5, 300)
    model = LinearRegressor(solver="normal").fit(X, y)
    with pytest.raises(ValueError, match="cov_type='HC1' needs one more pass over the data"):
        model.inference(cov_type="HC1")
    with pytest.raises(ValueError, match="pass both X and y"):
        model.inference(X)
    with pytest.raises(ValueError, match="fitted without sample_weight"):
        model.inference(X, y, weights)
    with pytest.raises(ValueError, match="X and y have 200 rows; the model was fitted on 300"):
        model.inference(X[:200], y[:200])
    with pytest.raises(ValueError, match="3 features and 1 outputs; the model was fitted with 4 features"):
        model.inference(X[:, :3], y)
    with pytest.raises(ValueError, match="cov_type must be one of"):
        model.inference(cov_type="HC4")
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\)"):
        model.inference(alpha=1.5)
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\)"):
        model.inference().conf_int(0)
    with pytest.raises(NotFittedError):
        LinearRegressor().inference(X, y)
    weighted = LinearRegressor(solver="normal").fit(X, y, weights)
    with pytest.raises(ValueError, match="fitted with sample_weight; pass the same sample_weight"):
        weighted.inference(X, y)


def test_statistics_of_an_earlier_fit_never_attach_to_a_later_one():
    X, y = heteroskedastic(n=300)
    model = LinearRegressor(solver="normal").fit(X, y)
    model.set_params(solver="gd", lr=1e-3, epochs=3).fit(X, y)
    with pytest.raises(ValueError, match="keeps no Gram statistics"):
        model.inference()
    model.set_params(solver="normal").fit(X, y)
    model.set_params(solver="gd").partial_fit(X, y)
    with pytest.raises(ValueError, match="keeps no Gram statistics"):
        model.inference()


def test_singular_design_warns_naming_the_rank():
    X, y = heteroskedastic(n=400)
    collinear = np.column_stack([X, X[:, 0] * 2.0 - X[:, 1]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LinearRegressor(solver="normal").fit(collinear, y)
    with pytest.warns(IllConditionedWarning, match=r"singular: rank 5 of 6 columns"):
        result = model.inference()
    assert result.df_model == 4 and result.df_resid == 400 - 5
    assert "singular" in result.summary()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' SingularMatrixWarning
        theirs = statsmodels_fit(collinear, y)
    assert (result.df_model, result.df_resid) == (theirs.df_model, theirs.df_resid)
    np.testing.assert_allclose(result.rsquared, theirs.rsquared, rtol=1e-8)  # the fit is identified, if not W


def test_ill_conditioned_design_warns():
    X, y = heteroskedastic(n=400)
    nearly = np.column_stack([X, X[:, 0] + 1e-6 * np.random.default_rng(0).standard_normal(400)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LinearRegressor(solver="normal").fit(nearly, y)
    with pytest.warns(IllConditionedWarning, match=r"ill-conditioned \(condition number .* after scaling\)"):
        model.inference(nearly, y, cov_type="HC1")


def test_a_well_conditioned_design_does_not_warn():
    X, y = heteroskedastic(n=400)
    model = LinearRegressor(solver="normal").fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.inference(X, y, cov_type="HC3")


def test_as_many_columns_as_rows_warns_and_gives_nan():
    X, y = np.random.default_rng(0).standard_normal((3, 2)), np.array([1.0, 2.0, 4.0])
    model = LinearRegressor(solver="normal").fit(X, y)
    with pytest.warns(IllConditionedWarning, match="no residual degrees of freedom: 3 rows for 3"):
        result = model.inference()
    assert result.df_resid == 0 and np.isnan(result.bse).all() and np.isnan(result.pvalues).all()
    assert "no residual degrees of freedom" in result.summary().lower()


def test_leverage_one_warns_for_hc2_and_hc3():
    X, y = heteroskedastic(n=50)
    dummy = np.zeros((50, 1))
    dummy[-1] = 1.0  # a column only the last row has: that row's leverage is exactly 1
    X = np.column_stack([X, dummy])
    model = LinearRegressor(solver="normal").fit(X, y)
    with pytest.warns(IllConditionedWarning, match="leverage 1"):
        model.inference(X, y, cov_type="HC2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.inference(X, y, cov_type="HC1")


# --------------------------------------------------------------------------- the summary


def test_summary_names_features_from_a_dataframe_intercept_first():
    pd = pytest.importorskip("pandas")
    data = load_diabetes(as_frame=True)
    model = LinearRegressor(solver="normal").fit(data.data, data.target)
    result = model.inference(cov_type="nonrobust")
    assert result.exog_names == ["const", *data.data.columns]
    text = result.summary()
    table = text.split("-" * 78)[1].split("=" * 78)[0].strip().splitlines()
    assert [line.split()[0] for line in table] == ["const", *data.data.columns]
    theirs = sm.OLS(data.target, sm.add_constant(data.data)).fit()
    first = table[0].split()
    assert first[1:] == [f"{theirs.params['const']:.4f}", f"{theirs.bse['const']:.3f}",
                         f"{theirs.tvalues['const']:.3f}", f"{theirs.pvalues['const']:.3f}",
                         f"{theirs.conf_int().loc['const', 0]:.3f}", f"{theirs.conf_int().loc['const', 1]:.3f}"]
    for needle in ("coef", "std err", "P>|t|", "[0.025", "0.975]", "R-squared:", f"{theirs.rsquared:.3f}",
                   "Adj. R-squared:", "F-statistic:", "No. Observations:", "442", "Df Residuals:", "431",
                   "Covariance Type:", "nonrobust", "exact (normal)"):
        assert needle in text, needle
    assert isinstance(pd.Series(result.params, index=result.exog_names), pd.Series)
    with pytest.raises(ValueError, match="X's columns should be those the model was fitted with"):
        model.inference(data.data.rename(columns={"age": "AGE"}), data.target)


def test_summary_without_names_uses_x0_and_one_block_per_output():
    X, Y = load_linnerud(return_X_y=True)
    text = LinearRegressor(solver="normal").fit(X, Y).inference(X, Y, cov_type="HC3", alpha=0.1).summary()
    assert text.count("Least-squares inference") == 3 and "output 2" in text
    for needle in ("const", "x0", "x1", "x2", "[0.05", "0.95]", "HC3", "heteroscedasticity robust (HC3)"):
        assert needle in text, needle
    assert "x3" not in text


# --------------------------------------------------------------------------- the kernel


def test_robust_meat_kernel_matches_numpy_and_is_deterministic_over_chunks_and_threads(monkeypatch):
    import numba

    rng = np.random.default_rng(5)
    n, n_features, n_outputs = 3001, 3, 2
    X = rng.standard_normal((n, n_features)).astype(np.float32)
    Y = rng.standard_normal((n, n_outputs)).astype(np.float32)
    weights = rng.uniform(0, 2, n)
    A = np.column_stack([X.astype(np.float64), np.ones(n)])
    G = A.T @ (weights[:, None] * A)
    theta = np.linalg.solve(G, A.T @ (weights[:, None] * Y.astype(np.float64)))
    G_inv = np.linalg.inv(G)
    B = np.linalg.inv(np.linalg.cholesky(G))
    residual = A @ theta - Y
    leverage = weights * np.einsum("if,fg,ig->i", A, G_inv, A)
    monkeypatch.setattr(cpu, "CHUNK_ROWS", 64)  # ~47 chunks
    monkeypatch.setattr(cpu, "PARALLEL_MIN_WORK", 0)  # the parallel path
    results = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        try:
            results.append([cpu_stats.robust_meat(X, Y, theta, weights, B, True, power) for power in (0, 1, 2)])
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for power, (M, ssr, max_leverage) in enumerate(results[0]):
        for o in range(n_outputs):
            c = (weights * residual[:, o]) ** 2 / (1 - leverage) ** power
            expected = A.T @ (c[:, None] * A)
            assert np.abs(M[o] - expected).max() <= 1e-12 * np.abs(expected).max()
            np.testing.assert_allclose(ssr[o], (weights * residual[:, o] ** 2).sum(), rtol=1e-12)
        assert max_leverage == (0.0 if power == 0 else pytest.approx(leverage.max(), rel=1e-12))
        M_two, ssr_two, _ = results[1][power]
        assert M.tobytes() == M_two.tobytes() and ssr.tobytes() == ssr_two.tobytes()  # bit-identical
    # The full (eigen) factor gives the same leverages as the triangular one.
    full = cpu_stats.robust_meat(X, Y, theta, weights, np.linalg.cholesky(G_inv).T, False, 2)[0]
    np.testing.assert_allclose(full, results[0][2][0], rtol=1e-10)


def test_robust_meat_checks_its_arguments():
    X, Y = np.zeros((5, 2)), np.zeros((5, 1))
    with pytest.raises(ValueError, match=r"theta must have shape \(3, 1\)"):
        cpu_stats.robust_meat(X, Y, np.zeros((2, 1)))
    with pytest.raises(ValueError, match="need B with shape"):
        cpu_stats.robust_meat(X, Y, np.zeros((3, 1)), power=1)
    with pytest.raises(ValueError, match="power must be 0"):
        cpu_stats.robust_meat(X, Y, np.zeros((3, 1)), power=3)


# --------------------------------------------------------------------------- command line, import cost


def test_cli_summary_prints_the_table(capsys):
    assert cli.main(["train", "--no-progress", "--dataset", "crops", "--solver", "normal", "--summary", "HC1"]) == 0
    out = capsys.readouterr().out
    assert "inference summary of 'this run' (cov_type=HC1)" in out and "P>|t|" in out and "const" in out


def test_cli_summary_of_the_seed_demo_explains_the_unconverged_run(capsys):
    assert cli.main(["train", "--no-progress", "--epochs", "20", "--n-samples", "500", "--summary"]) == 0
    out = capsys.readouterr().out
    assert "inference summary of 'lr=1e-05, 20 epochs'" in out and "not available: the fitted parameters" in out
    assert "inference summary of 'standardize, lr=auto, 100 ep'" in out


def test_cli_summary_streaming(capsys, npy_files):
    _, _, _, paths = npy_files
    assert cli.main(["train", "--no-progress", "--dataset", str(paths["X"]), "--target-file", str(paths["Y"]),
                     "--weight-file", str(paths["w"]), "--solver", "normal", "--summary", "HC3"]) == 0
    out = capsys.readouterr().out
    assert out.count("Least-squares inference") == 2 and "WLS" in out


def test_import_linreg_stays_light():
    code = ("import sys, linreg; m = linreg.LinearRegressor(solver='normal'); "
            "print(json.dumps([n for n in ('scipy', 'scipy.stats', 'statsmodels', 'torch') if n in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout
    assert json.loads(out) == []


# --------------------------------------------------------------------------- two ranks (torch.distributed, gloo)

DISTRIBUTED_WORKER = r"""
import json, sys
import numpy as np
from linreg import LinearRegressor, distributed

config = json.load(open(sys.argv[1]))
files, result = config["files"], {}
distributed.init(timeout=60)
model = distributed.fit(LinearRegressor(solver="normal"), files["X"], files["Y"], files["w"],
                        chunk_bytes=config["chunk_bytes"], shards=config["shards"])
for cov_type in ("nonrobust", "HC0", "HC1", "HC2", "HC3"):
    r = distributed.inference(model, files["X"], files["Y"], files["w"], cov_type=cov_type,
                              chunk_bytes=config["chunk_bytes"], shards=config["shards"])
    result[cov_type] = {name: np.asarray(getattr(r, name)).tolist() for name in ("params", "bse", "pvalues", "fvalue")}
print(json.dumps(result), flush=True)
"""


def test_two_ranks_give_the_single_process_inference(tmp_path, npy_files):
    pytest.importorskip("torch")
    import torch.distributed

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    from helpers import run_ranks

    X, Y, weights, paths = npy_files
    chunk_bytes, shards = 16_000, [[0, 900], [900, X.shape[0]]]
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"files": {k: str(v) for k, v in paths.items()}, "chunk_bytes": chunk_bytes,
                                  "shards": shards}))
    worker = tmp_path / "worker.py"
    worker.write_text(DISTRIBUTED_WORKER)
    outputs = run_ranks(worker, config)
    assert outputs[0] == outputs[1]  # every rank holds the same result, to the bit
    model = LinearRegressor(solver="normal").fit(X, Y, weights)
    for cov_type, ranks in outputs[0].items():
        expected = model.inference(X, Y, weights, cov_type=cov_type)
        for name, value in ranks.items():
            np.testing.assert_allclose(value, getattr(expected, name), rtol=1e-10, atol=1e-14,
                                       err_msg=f"{cov_type} {name}")


def test_the_report_times_the_same_inference_as_statsmodels():
    import harness as report

    case = report.Case("W6", 2_000, 4, 1, "float64")
    data = report.make_problem(case)
    ours, _ = report.prepare("linreg-cpu", case, data)
    theirs, _ = report.prepare("statsmodels", case, data)
    for mine, reference in zip(ours(), theirs(), strict=True):  # nonrobust p, CI, HC3 p, CI
        np.testing.assert_allclose(mine, reference, rtol=1e-8, atol=1e-10)
    with pytest.raises(report.Unavailable, match="W6"):
        report.prepare("statsmodels", report.Case("W5", 100, 4, 1, "float64"))


def test_torchrun_train_summary_prints_once_the_single_process_numbers(tmp_path, npy_files):
    pytest.importorskip("torch")
    from helpers import LAUNCH_TIMEOUT

    X, Y, weights, paths = npy_files
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "linreg", "train", "--dataset", str(paths["X"]), "--target-file", str(paths["Y"]),
               "--weight-file", str(paths["w"]), "--distributed", "--solver", "normal", "--no-progress",
               "--chunk-mb", "0.02", "--dist-timeout", "60", "--summary", "HC2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("inference summary of 'this run' (cov_type=HC2)") == 1  # rank 0 only
    expected = LinearRegressor(solver="normal").fit(X, Y, weights).inference(X, Y, weights, cov_type="HC2")
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("x2 ")]
    assert [row[1:3] for row in rows] == [[f"{expected.params[o, 3]:.4f}", f"{expected.bse[o, 3]:.3f}"]
                                          for o in range(2)]
