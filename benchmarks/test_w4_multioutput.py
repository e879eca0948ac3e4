"""W4 one full-batch epoch with 8 outputs: 1,000,000x64 -> 8 float32.
"""

WORKLOAD = "W4"


def test_w4_multioutput(timed, case, provider):
    timed(provider, case)
