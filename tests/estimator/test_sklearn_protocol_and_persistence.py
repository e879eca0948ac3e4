"""scikit-learn conventions (clone, Pipeline, GridSearchCV, DataFrames) and save/load."""

import json
import zipfile

import numpy as np
import pytest
from helpers import random_problem

import linreg
from linreg import LinearRegressor

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


def data(n_samples=120, n_outputs=1, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, 3)) * [1, 10, 100] + 5
    y = X @ [2.0, -0.3, 0.01] + 1.0 + 0.05 * rng.standard_normal(n_samples)
    return X, y if n_outputs == 1 else np.column_stack([y, -y])


def test_clone_and_params_round_trip():
    model = LinearRegressor(epochs=7, optimizer="adam", betas=(0.8, 0.9), penalty="l1", alpha=0.1)
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
    assert set(model.get_params()) >= {"solver", "batch_size", "shuffle", "optimizer", "momentum", "dampening",
                                       "nesterov", "weight_decay", "betas", "eps", "amsgrad", "penalty", "alpha",
                                       "l1_ratio", "lr", "schedule", "tol", "n_iter_no_change", "early_stopping",
                                       "validation_fraction", "standardize", "warm_start", "random_state"}
    with pytest.raises(ValueError, match="Invalid parameter 'epoch' for estimator LinearRegressor"):
        model.set_params(epoch=3)
    with pytest.raises(TypeError):
        LinearRegressor(100)  # keyword-only
    assert repr(LinearRegressor(epochs=9, lr=0.1)) == "LinearRegressor(epochs=9, lr=0.1)"


def test_pipeline_and_cross_validation():
    X, y = data()
    pipeline = make_pipeline(StandardScaler(), LinearRegressor(lr="auto", epochs=200))
    pipeline.fit(X, y)
    assert pipeline.score(X, y) > 0.99
    scores = cross_val_score(LinearRegressor(solver="normal"), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.99


def test_grid_search():
    X, y = data()
    search = GridSearchCV(LinearRegressor(standardize=True, lr="auto"), {"epochs": [1, 100], "penalty": [None, "l2"]},
                          cv=3).fit(X, y)
    assert search.best_params_["epochs"] == 100
    assert isinstance(search.best_estimator_, LinearRegressor)


def test_feature_names_from_dataframes():
    pandas = pytest.importorskip("pandas")
    X, y = data()
    frame = pandas.DataFrame(X, columns=["a", "b", "c"])
    model = LinearRegressor(solver="normal").fit(frame, y)
    assert list(model.feature_names_in_) == ["a", "b", "c"] and model.n_features_in_ == 3
    np.testing.assert_array_equal(model.predict(frame), model.predict(X))
    with pytest.raises(ValueError, match="feature names should match"):
        model.predict(frame[["c", "b", "a"]])
    assert not hasattr(LinearRegressor(solver="normal").fit(X, y), "feature_names_in_")


@pytest.mark.parametrize("params", [
    dict(epochs=30, lr=1e-4),
    dict(solver="normal", penalty="l2", alpha=0.1, standardize=True),
    dict(epochs=20, optimizer="adam", lr=0.01, batch_size=16, random_state=1, init=(np.ones((2, 3)), np.zeros(2))),
])
def test_save_load_round_trip_is_bit_exact(tmp_path, params):
    import pandas

    X, Y = data(n_outputs=2 if isinstance(params.get("init"), tuple) else 1)
    frame = pandas.DataFrame(X, columns=["a", "b", "c"])
    model = LinearRegressor(**params).fit(frame, Y)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = linreg.load(path)
    assert type(loaded.coef_) is type(model.coef_)
    np.testing.assert_array_equal(loaded.coef_, model.coef_)
    assert loaded.coef_.dtype == model.coef_.dtype
    np.testing.assert_array_equal(loaded.intercept_, model.intercept_)
    np.testing.assert_array_equal(loaded.loss_history_, model.loss_history_)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert list(loaded.feature_names_in_) == ["a", "b", "c"]
    saved, original = loaded.get_params(), model.get_params()
    if isinstance(original["init"], tuple):
        np.testing.assert_array_equal(saved.pop("init")[0], original.pop("init")[0])
    assert saved == original
    assert (loaded.n_iter_, loaded.stop_reason_, loaded.n_features_in_) == (model.n_iter_, model.stop_reason_, 3)
    with np.load(path, allow_pickle=False) as archive:  # readable without unpickling
        assert json.loads(str(archive["meta"]))["library_version"] == linreg.__version__


def saved_model(tmp_path):
    X, y = data()
    path = tmp_path / "model.npz"
    LinearRegressor(epochs=3, lr=1e-4).fit(X, y).save(path)
    return path


def rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(str(arrays["meta"]))
    for key, value in changes.items():
        if key == "meta":
            meta.update(value)
        elif value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage, match", [
    (lambda p: p.write_bytes(b"not a zip file at all"), "not a readable linreg model file"),
    (lambda p: p.write_bytes(p.read_bytes()[:200]), "not a readable linreg model file"),
    (lambda p: np.savez(p, coef=np.ones(3)), "no metadata"),
    (lambda p: np.savez(p, meta=np.array("{not json")), "corrupt metadata"),
    (lambda p: np.savez(p, meta=np.array(json.dumps({"format": "other"}))), "not a linreg model file"),
    (lambda p: rewrite(p, meta={"format_version": 99, "library_version": "9.0"}),
     r"format version 99 \(library 9.0\).*upgrade linreg"),
    (lambda p: rewrite(p, coef=np.ones(7)), "coef has shape"),
    (lambda p: rewrite(p, intercept=None), "lacks coef, intercept"),
    (lambda p: rewrite(p, meta={"params": {"no_such_option": 1}}), "unknown hyper-parameters"),
    (lambda p: rewrite(p, coef=np.array([object(), 1, 2], dtype=object)), "not a readable"),
])
def test_malformed_model_files_are_rejected(tmp_path, damage, match):
    path = saved_model(tmp_path)
    damage(path)
    with pytest.raises(linreg.ModelFileError, match=match):
        linreg.load(path)


def test_save_is_atomic_and_needs_a_fit(tmp_path):
    with pytest.raises(linreg.NotFittedError):
        LinearRegressor().save(tmp_path / "x.npz")
    path = saved_model(tmp_path)
    assert zipfile.is_zipfile(path) and [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_estimator_checks_subset():
    """scikit-learn's own checks on the parts of the contract they cover."""
    from sklearn.utils.estimator_checks import check_get_params_invariance, check_parameters_default_constructible

    check_parameters_default_constructible("LinearRegressor", LinearRegressor())
    check_get_params_invariance("LinearRegressor", LinearRegressor())


def test_partial_fit_on_stream_of_batches():
    X, Y, _, _ = random_problem(300, 3, 1, np.float64)
    model = LinearRegressor(lr=0.05, optimizer="adam")
    for start in range(0, 300, 50):
        model.partial_fit(X[start:start + 50], Y[start:start + 50])
    assert model.n_iter_ == 6 and model.loss_history_.shape == (6,)
