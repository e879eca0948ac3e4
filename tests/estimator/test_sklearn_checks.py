"""scikit-learn's own conformance suite (``check_estimator``) on LinearRegressor: every check passes, for
the defaults, a mini-batch and an Adam configuration.

Every check runs and its outcome is asserted (no check is skipped by a tag or marked as an expected failure).
"""

import warnings

import pytest

from linreg import LinearRegressor

sklearn_checks = pytest.importorskip("sklearn.utils.estimator_checks")

CONFIGURATIONS = [
    pytest.param({}, id="defaults"),
    pytest.param({"batch_size": 64, "random_state": 0}, id="minibatch"),
    pytest.param({"optimizer": "adam", "lr": 0.05}, id="adam"),
]


@pytest.mark.parametrize("params", CONFIGURATIONS)
def test_check_estimator_passes_every_check(params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = sklearn_checks.check_estimator(LinearRegressor(**params), on_fail=None)
    assert len(results) > 50  # the whole suite ran
    failed = {r["check_name"]: r["exception"] for r in results if r["status"] == "failed"}
    assert not failed, {name: repr(error)[:300] for name, error in failed.items()}


def test_not_fitted_error_is_also_scikit_learns():
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    import linreg

    with pytest.raises(SklearnNotFittedError, match="not fitted yet"):
        LinearRegressor().predict([[1.0]])
    with pytest.raises(linreg.NotFittedError):
        LinearRegressor().predict([[1.0]])
