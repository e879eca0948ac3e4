"""Hand-written Numba kernels for linear regression: ``kernels.cpu`` and ``kernels.cuda``.

Kernels know arrays and shapes only: no policy, no I/O, no torch.
"""
