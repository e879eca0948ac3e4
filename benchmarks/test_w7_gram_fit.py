"""W7 a whole fit of 500 full-batch epochs over 1,000,000x32 float32: LinearRegressor(solver="gram")
(one Gram pass, then the epochs on the 33x33 statistics) against the same fit streaming X every
epoch (solver="gd", provider linreg-stream), and the Gram pass alone (provider gram-pass).
"""

WORKLOAD = "W7"


def test_w7_gram_fit(timed, case, provider):
    timed(provider, case, rounds=3)
