"""W1 seed 000's whole fit: 5000x5 float32, 500 epochs of full-batch GD at lr 1e-5 from ones (the notebook).
"""

WORKLOAD = "W1"


def test_w1_seed_fit(timed, case, provider):
    timed(provider, case)
