"""W3 one mini-batch SGD epoch, batch 256, reshuffled, over 1,000,000x32 float32.

Our provider needs LinearRegressor(batch_size=...) (the training issue); without it the test skips with that reason.
"""

WORKLOAD = "W3"


def test_w3_minibatch(timed, case, provider):
    timed(provider, case, rounds=3)
