"""W5 exact least squares over 2,000,000x32, float64 and float32, input validation included:
LinearRegressor(solver="normal") against scikit-learn's LinearRegression, scikit-learn-intelex's
(oneDAL; skipped with the reason when not installed) and numpy.linalg.lstsq.

Our provider needs LinearRegressor(solver=...) (the training issue); without it the test skips with that reason.
"""

WORKLOAD = "W5"


def test_w5_exact_solve(timed, case, provider):
    timed(provider, case, rounds=3)
