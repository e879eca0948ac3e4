"""linreg: linear regression on hand-written Numba kernels (CPU and CUDA), checked against torch autograd.

``import linreg`` never imports torch: only ``linreg.oracle`` and the "torch"
backend do, lazily.
"""

from linreg import datasets
from linreg.estimator import DivergenceError, LinearRegressor, NotFittedError
from linreg.inference import NotConvergedError
from linreg.persistence import ModelFileError, load
from linreg.training import ConvergenceWarning, IllConditionedWarning

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning", "DivergenceError", "IllConditionedWarning", "LinearRegressor", "ModelFileError",
    "NotConvergedError", "NotFittedError", "__version__", "datasets", "load",
]
