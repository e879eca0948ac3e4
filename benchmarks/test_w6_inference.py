"""W6 a fit plus its inference over 1,000,000x32 float64: LinearRegressor(solver="normal").fit, inference()
(nonrobust, from the fit's Gram statistics) and inference(X, y, cov_type="HC3") (one fused pass) against
statsmodels OLS(y, add_constant(X)).fit() and get_robustcov_results("HC3").
"""

WORKLOAD = "W6"


def test_w6_inference(timed, case, provider):
    timed(provider, case, rounds=3)
