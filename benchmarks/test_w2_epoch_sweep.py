"""W2 one full-batch epoch (loss, gradients, update) over a size sweep; 2,000,000x32 float32 is the bandwidth target.
"""

WORKLOAD = "W2"


def test_w2_epoch_sweep(timed, case, provider):
    timed(provider, case)
