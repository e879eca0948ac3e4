"""Data as users have it: pandas, polars and pyarrow tables as X (and as y), each against the same fit on NumPy."""

import numpy as np
import pytest

from linreg import LinearRegressor

pd = pytest.importorskip("pandas")
pl = pytest.importorskip("polars")
pa = pytest.importorskip("pyarrow")

NAMES = ["height", "width", "depth"]


def problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 3.0 + 0.1 * rng.standard_normal(300)
    return X, y


def frames(X, y):
    columns = {name: X[:, i] for i, name in enumerate(NAMES)}
    return {
        "pandas": (pd.DataFrame(columns), pd.Series(y, name="target")),
        "polars": (pl.DataFrame(columns), pl.Series("target", y)),
        "pyarrow": (pa.table(columns), pa.chunked_array([y[:100], y[100:]])),
    }


@pytest.mark.parametrize("library", ["pandas", "polars", "pyarrow"])
def test_tables_fit_like_the_same_numbers_and_keep_the_column_names(library):
    X, y = problem()
    frame, target = frames(X, y)[library]
    dense = LinearRegressor(solver="normal").fit(X, y)
    model = LinearRegressor(solver="normal").fit(frame, target)
    np.testing.assert_array_equal(model.coef_, dense.coef_)
    assert model.intercept_ == dense.intercept_
    assert list(model.feature_names_in_) == NAMES
    np.testing.assert_array_equal(model.predict(frame), dense.predict(X))


@pytest.mark.parametrize("library", ["pandas", "polars", "pyarrow"])
def test_a_non_numeric_column_is_an_error_that_names_it(library):
    X, y = problem()
    labels = np.array(["a", "b", "c"] * 100)
    table = {"pandas": lambda: pd.DataFrame({"height": X[:, 0], "colour": labels}),
             "polars": lambda: pl.DataFrame({"height": X[:, 0], "colour": labels}),
             "pyarrow": lambda: pa.table({"height": X[:, 0], "colour": labels})}[library]()
    with pytest.raises(TypeError, match="X column 'colour' holds .*not numbers: encode it"):
        LinearRegressor(solver="normal").fit(table, y)


def test_integer_and_float32_columns_follow_the_dtype_rule():
    X, y = problem()
    ints = pl.DataFrame({"a": np.arange(300), "b": (X[:, 1] * 10).astype(np.int32)})
    model = LinearRegressor(solver="normal").fit(ints, y.astype(np.float32))
    assert model.coef_.dtype == np.float32  # integers become float32, as the seeds do
