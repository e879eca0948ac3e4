"""Every option of a fit, declared once.

``OPTIONS`` is the one table of ``LinearRegressor``'s keyword arguments. From
it come: the estimator's ``__init__`` signature and defaults, the validation
of each value (``make_spec``), the ``linreg train`` flags and their defaults
(``add_flags`` / ``params_from_flags``), which options may change between an
interrupted fit and its resumption (``RESUMABLE``), and the options table of
the README (``markdown_table``, checked by a test). Adding an option is one
entry here plus the code that uses it.

Checks raise ``TypeError`` or ``ValueError`` naming the option, what was
expected and what was given. Rules that tie several options together are in
``_check_combinations``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from linreg import _validation as check

SOLVERS = ("gd", "normal", "gram")
OPTIMIZERS = ("sgd", "adam", "adamw")
PENALTIES = ("l2", "l1", "elasticnet", None)
SCHEDULES = ("constant", "invscaling", "step", "exponential", "cosine", "adaptive")
INITS = ("ones", "zeros", "randn")
#: The backends' names, in the order errors list them (``linreg.backends.BACKENDS`` registers each).
BACKEND_NAMES = ("cpu", "torch", "cuda")
#: torch.optim's default weight decay per optimiser (weight_decay=None means this).
DEFAULT_WEIGHT_DECAY = {"sgd": 0.0, "adam": 0.0, "adamw": 1e-2}


# --------------------------------------------------------------------------- value checks


def _real(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False):
    def check_real(value: Any, name: str) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
        value = float(value)
        ok_low = value > low if low_open else value >= low
        ok_high = value < high if high_open else value <= high
        if not (math.isfinite(value) and ok_low and ok_high):
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open or high == math.inf else ']'}"
            raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
        return value

    return check_real


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _positive_int(value: Any, name: str) -> int:
    return int(check.check_positive(value, name, integer=True))


def _optional(inner: Callable[[Any, str], Any]):
    def check_optional(value: Any, name: str) -> Any:
        return None if value is None else inner(value, name)

    return check_optional


def _choice(choices: tuple):
    return lambda value, name: check.check_choice(value, name, choices)


def _lr(value: Any, name: str) -> float | str | None:
    if value is None:
        return None  # resolved in make_spec
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"{name} must be a positive number or 'auto', got {value!r}")
        return value
    return float(check.check_positive(value, name))


def _penalty(value: Any, name: str) -> str | None:
    if value not in PENALTIES:
        raise ValueError(f"{name} must be one of 'l2', 'l1', 'elasticnet' or None; got {value!r}")
    return value


def _betas(value: Any, name: str) -> tuple[float, float]:
    if not (isinstance(value, tuple | list) and len(value) == 2):
        raise TypeError(f"{name} must be a pair (beta1, beta2), got {value!r}")
    unit = _real(0.0, 1.0, high_open=True)
    return unit(value[0], f"{name}[0]"), unit(value[1], f"{name}[1]")


def _init(value: Any, name: str) -> Any:
    if isinstance(value, str):
        return check.check_choice(value, name, INITS)
    if not (isinstance(value, tuple | list) and len(value) == 2):
        raise TypeError(f"{name} must be one of {INITS} or a (W, b) pair of arrays, got {value!r}")
    return value  # shapes and finiteness are checked against the data in fit


def _random_state(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int or None, got {value!r}")
    if not 0 <= value < 2**63:
        raise ValueError(f"{name} must be in [0, 2**63), got {value}")
    return int(value)


def _checkpoint_path(value: Any, name: str) -> Any:
    if value is None:
        return None
    folder = os.path.dirname(os.path.abspath(os.fspath(value)))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ValueError(f"{name} {value!r}: the folder {folder!r} does not exist or is not writable")
    return value


# --------------------------------------------------------------------------- command-line parsers (text -> value)


def parse_positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _text_lr(text: str) -> float | str:
    if text == "auto":
        return text
    value = float(text)
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _text_penalty(text: str) -> str | None:
    if text == "none":
        return None
    if text not in ("l2", "l1", "elasticnet"):
        raise argparse.ArgumentTypeError(f"must be l2, l1, elasticnet or none, got {text}")
    return text


@dataclasses.dataclass(frozen=True)
class Flag:
    """How ``linreg train`` spells an option: ``kind`` is "value", "choice", "switch" (store_true),
    "negated" (``--no-NAME``, store_false) or "pair" (two floats)."""

    kind: str = "value"
    parse: Callable[[str], Any] | None = None
    help: str = ""
    metavar: Any = None


@dataclasses.dataclass(frozen=True)
class Option:
    name: str
    default: Any
    check: Callable[[Any, str], Any]
    values: str  # what it accepts, for the docs
    doc: str  # what it does and the reference it equals, for the docs
    flag: Flag | None = None  # None: not a ``linreg train`` flag of its own (the CLI sets it otherwise)
    resumable: bool = False  # may differ between an interrupted fit and its resumption
    training: bool = True  # shapes the trajectory (part of ``Spec``) rather than how the fit is run
    choices: tuple | None = None


def _value(parse=float, help="", metavar=None) -> Flag:
    return Flag("value", parse, help, metavar)


OPTIONS: tuple[Option, ...] = (
    Option("epochs", 500, _positive_int, "int (500)", "passes over the data (seed 000's 500)",
           _value(parse_positive_int, "passes over the data"), resumable=True),
    Option("lr", None, _lr, 'float, `"auto"` or None (None)',
           'None: `"auto"` with `standardize` (optimizer `"sgd"`), torch\'s 1e-3 for Adam/AdamW, and in '
           "`partial_fit` `1/L` of the first batch's curvature (the seeds use lr=1e-5). "
           '`"auto"`: `1/L`, `L` the largest eigenvalue of the objective\'s Hessian '
           "`2/(n_outputs sum s) [X 1]^T S [X 1]` (+ alpha's L2 part), computed in closed form from one Gram pass. "
           "A step of `1/L` shrinks every eigen-direction of a quadratic (the factor `1 - lr*lambda` stays in "
           "`[0, 1)`), so full-batch GD cannot diverge. Needs `optimizer=\"sgd\"`.",
           _value(_text_lr, "learning rate, or 'auto' (1/L from the loss curvature); default: auto, on "
                            "standardised features")),
    Option("solver", "gd", _choice(SOLVERS), '`"gd"`, `"normal"`, `"gram"`',
           '`"normal"`: `numpy.linalg.lstsq` / `Ridge` (the Gram matrix, `X^T Y` and column sums accumulated by '
           "one kernel pass, Jacobi-scaled, then a small solve; `IllConditionedWarning` on a singular (minimum-norm "
           'solution returned) or ill-conditioned system). `"gram"`: full-batch GD whose epochs cost '
           "O(n_features² n_outputs) from those statistics, independent of n_samples, on the same trajectory as "
           "streaming GD up to rounding.",
           Flag("choice", help="gd (streaming GD), normal (exact), gram (GD on X^T X)"), choices=SOLVERS),
    Option("batch_size", None, _optional(_positive_int), "int or None (None: full batch)",
           "mini-batch SGD; the last partial batch is kept, as torch's `DataLoader(drop_last=False)`",
           _value(parse_positive_int, "mini-batch size (default: full batch)")),
    Option("shuffle", True, _flag, "bool (True)",
           "with mini-batches, a new order each epoch: Fisher-Yates driven by splitmix64 of (`random_state`, epoch); "
           "rows are gathered by index inside the kernel, X is never copied. `linreg.kernels.cpu_train.epoch_order` "
           "returns the order.", Flag("negated", help="keep the row order in every epoch")),
    Option("optimizer", "sgd", _choice(OPTIMIZERS), '`"sgd"`, `"adam"`, `"adamw"`',
           "`torch.optim.SGD`, `Adam`, `AdamW`", Flag("choice"), choices=OPTIMIZERS),
    Option("momentum", 0.0, _real(0.0), "float (0)", "`torch.optim.SGD`'s", _value()),
    Option("dampening", 0.0, _real(0.0, 1.0), "float (0)", "`torch.optim.SGD`'s", _value()),
    Option("nesterov", False, _flag, "bool (False)", "`torch.optim.SGD`'s", Flag("switch")),
    Option("weight_decay", None, _optional(_real(0.0)), "float or None",
           "torch's; None means torch's default (0, or 0.01 for AdamW). Applies to the weights only, as torch.optim "
           "with the bias in a `weight_decay=0` parameter group", _value(help="torch's; default 0 (0.01 for adamw)")),
    Option("betas", (0.9, 0.999), _betas, "(float, float) ((0.9, 0.999))", "`torch.optim.Adam`/`AdamW`'s",
           Flag("pair", float, metavar=("BETA1", "BETA2"))),
    Option("eps", 1e-8, _real(0.0), "float (1e-8)", "`torch.optim.Adam`/`AdamW`'s", _value()),
    Option("amsgrad", False, _flag, "bool (False)", "`torch.optim.Adam`/`AdamW`'s", Flag("switch")),
    Option("penalty", None, _penalty, '`"l2"`, `"l1"`, `"elasticnet"` or None (None)',
           "see the objective; L1 uses the subgradient `sign(w)` (0 at 0) as torch's autograd of `abs`",
           _value(_text_penalty, "l2, l1, elasticnet or none")),
    Option("alpha", 1e-4, _real(0.0), "float (1e-4)", "the penalty's strength", _value(help="penalty strength")),
    Option("l1_ratio", 0.15, _real(0.0, 1.0), "float (0.15)", "the elastic net's L1 share", _value()),
    Option("schedule", "constant", _choice(SCHEDULES),
           '`"constant"`, `"invscaling"`, `"step"`, `"exponential"`, `"cosine"`, `"adaptive"`',
           'per epoch: `"invscaling"` `lr / (epoch+1)^power_t` (scikit-learn\'s formula, stepped per epoch); '
           '`"step"` torch `StepLR(step_size, gamma)`; `"exponential"` torch `ExponentialLR(gamma)`; `"cosine"` '
           'torch `CosineAnnealingLR(t_max or epochs, eta_min)`; `"adaptive"` scikit-learn\'s: lr / 5 whenever '
           "`n_iter_no_change` epochs fail to improve by `tol`, stop once lr < 1e-6",
           Flag("choice"), choices=SCHEDULES),
    Option("power_t", 0.25, _real(0.0), "float (0.25)", "invscaling's exponent", _value(help="invscaling's exponent")),
    Option("gamma", 0.1, _real(0.0, low_open=True), "float (0.1)", "the step and exponential schedules' factor",
           _value(help="step/exponential factor")),
    Option("step_size", 30, _positive_int, "int (30)", "epochs between the step schedule's decays",
           _value(parse_positive_int, "epochs between step decays")),
    Option("t_max", None, _optional(_positive_int), "int or None (None: epochs)", "the cosine schedule's period",
           _value(parse_positive_int, "cosine period (default: epochs)")),
    Option("eta_min", 0.0, _real(0.0), "float (0)", "the cosine schedule's floor", _value(help="cosine floor")),
    Option("tol", None, _optional(_real(0.0)), "float or None (None)",
           "scikit-learn's rule: stop when the loss (or, with `early_stopping`, the validation loss) is above "
           "`best - tol` for `n_iter_no_change` consecutive epochs; `ConvergenceWarning` if the epochs run out "
           'first. `tol=None`: no stopping (the seeds\' fixed epochs); `early_stopping` and `"adaptive"` need a '
           "`tol`.", _value(help="stop when the loss improves by less than this")),
    Option("n_iter_no_change", 5, _positive_int, "int (5)", "epochs without improvement before `tol` stops",
           _value(parse_positive_int)),
    Option("early_stopping", False, _flag, "bool (False)",
           "holds out `ceil(fraction * n)` seeded rows; the parameters with the best validation loss are kept (as "
           "`MLPRegressor`), whether the rule stops training or the epochs run out",
           Flag("switch", help="stop on a held-out validation loss")),
    Option("validation_fraction", 0.1, _real(0.0, 1.0, low_open=True, high_open=True), "float (0.1)",
           "the held-out share of `early_stopping`", _value()),
    Option("standardize", None, _optional(_flag), "bool or None (None)",
           "None: True when `lr` is left to its default (the curvature-scaled step on standardised features) "
           "with an iterative solver, else False. True: fit on `(X - mean) / std` (weighted, training rows), "
           "report `coef_`/`intercept_` in original units. "
           "Implemented as a reparametrisation around the kernel, X is not copied. Constant columns are left "
           "unscaled.", Flag("switch", help="fit on standardised features (coef in original units); the default "
                                            "when --lr is not given")),
    Option("init", "ones", _init, '`"ones"`, `"zeros"`, `"randn"`, `(W, b)`',
           "seed 000's ones; seed 003's standard normal (from `numpy.random.default_rng(random_state)`)",
           Flag("choice", help="initial parameters (ones: seed 000)"), training=False, choices=INITS),
    Option("backend", "cpu", _choice(BACKEND_NAMES), '`"cpu"`, `"cuda"`, `"torch"`', "see What runs where",
           Flag("choice"), training=False, choices=BACKEND_NAMES),
    Option("warm_start", False, _flag, "bool (False)",
           "`fit` starts from the previous `coef_`/`intercept_` (optimiser state restarts)", resumable=True,
           training=False),
    Option("random_state", None, _random_state, "int or None (None)",
           'seeds `"randn"`, the shuffle and the validation split', training=False),
    Option("progress", False, _flag, "bool (False)",
           "tqdm bar with the live loss (the compiled loop then returns to Python ~100 times per fit)",
           resumable=True, training=False),
    Option("checkpoint_every", None, _optional(_positive_int), "int or None (None)",
           "write the run's whole state to `checkpoint_path` every N epochs (atomically); `fit(resume=True)` "
           "continues from it", resumable=True, training=False),
    Option("checkpoint_path", None, _checkpoint_path, "path or None (None)",
           "where checkpoints are written (also on Ctrl-C and at the end)", resumable=True, training=False),
)

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}
DEFAULTS: dict[str, Any] = {option.name: option.default for option in OPTIONS}
#: Options that may differ between an interrupted fit and its resumption from a checkpoint.
RESUMABLE: frozenset[str] = frozenset(option.name for option in OPTIONS if option.resumable)


# --------------------------------------------------------------------------- the validated options of a fit


def _non_plain_options(self) -> list[str]:
    """The options that take this beyond the seeds' plain full-batch gradient descent."""
    plain = {"solver": "gd", "batch_size": None, "optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0,
             "penalty": None, "schedule": "constant", "tol": None, "early_stopping": False, "standardize": False}
    changed = [f"{name}={getattr(self, name)!r}" for name, value in plain.items() if getattr(self, name) != value]
    if self.lr == "auto":
        changed.append("lr='auto'")
    return changed


def _l1_share(self) -> float:
    return {"l1": 1.0, "elasticnet": self.l1_ratio}.get(self.penalty, 0.0)


#: The validated training options (``make_spec``): one frozen field per training option of ``OPTIONS``.
Spec = dataclasses.make_dataclass(
    "Spec", [(option.name, Any) for option in OPTIONS if option.training], frozen=True,
    namespace={"non_plain_options": _non_plain_options, "l1_share": property(_l1_share),
               "__module__": __name__, "__doc__": "Validated training options (see linreg.options.OPTIONS)."})


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """Every option checked and normalised (errors name the option, the expectation and the value)."""
    values = {option.name: option.check(params[option.name], option.name) for option in OPTIONS}
    if values["checkpoint_every"] is not None and values["checkpoint_path"] is None:
        raise ValueError("checkpoint_every needs checkpoint_path, the file to write the checkpoints to")
    return values


def make_spec(params: dict[str, Any]) -> Spec:
    """The training options of ``params`` (all of ``OPTIONS``' names), validated, as a ``Spec``."""
    values = check_params(params)
    resolve_defaults(values)
    if values["weight_decay"] is None:
        values["weight_decay"] = DEFAULT_WEIGHT_DECAY[values["optimizer"]]
    spec = Spec(**{option.name: values[option.name] for option in OPTIONS if option.training})
    _check_combinations(spec)
    return spec


def resolve_defaults(values: dict[str, Any]) -> None:
    """The defaults that depend on other options (checked ``values``, changed in place).

    ``lr=None``: the curvature-scaled step ``"auto"`` for SGD (on standardised features unless
    ``standardize`` is given), torch's 1e-3 for Adam/AdamW. ``standardize=None``: True exactly then,
    for an iterative solver. These make ``LinearRegressor().fit(X, y)`` reach the least-squares optimum
    on any finite data, whatever the features' scales and offsets; the seeds' settings stay one explicit
    call away (``epochs=500, lr=1e-5, init="ones"``).
    """
    default_step = values["lr"] is None
    if default_step:
        values["lr"] = "auto" if values["optimizer"] == "sgd" else 1e-3
    if values["standardize"] is None:  # the torch and cuda backends run raw features only
        values["standardize"] = default_step and values["solver"] != "normal" and values["backend"] == "cpu"


def _check_combinations(spec: Spec) -> None:
    if spec.nesterov and (spec.momentum <= 0 or spec.dampening != 0):
        raise ValueError("nesterov=True needs momentum > 0 and dampening=0 (as torch.optim.SGD)")
    if spec.optimizer != "sgd" and (spec.momentum or spec.nesterov or spec.dampening):
        raise ValueError(f"momentum, dampening and nesterov are SGD options; optimizer={spec.optimizer!r} "
                         "uses betas instead")
    if spec.lr == "auto" and spec.optimizer != "sgd":
        raise ValueError(f"lr='auto' is the gradient-descent step 1/L from the loss curvature; it needs "
                         f"optimizer='sgd', got {spec.optimizer!r} (Adam's step is not curvature-scaled)")
    if spec.schedule in ("adaptive",) and spec.tol is None:
        raise ValueError("schedule='adaptive' divides lr by 5 when the loss stops improving by tol: set tol "
                         "(scikit-learn uses 1e-3)")
    if spec.early_stopping and spec.tol is None:
        raise ValueError("early_stopping=True stops when the validation loss stops improving by tol: set tol "
                         "(scikit-learn uses 1e-3)")
    if spec.solver == "normal":
        if spec.penalty in ("l1", "elasticnet"):
            raise ValueError(f"solver='normal' solves least squares or ridge exactly; penalty={spec.penalty!r} has "
                             "no closed form: use solver='gd' or 'gram'")
        if spec.early_stopping:
            raise ValueError("early_stopping applies to iterative solvers, not solver='normal'")
    if spec.solver in ("normal", "gram") and spec.batch_size is not None:
        raise ValueError(f"solver={spec.solver!r} works on the whole data set's statistics; batch_size must be "
                         f"None, got {spec.batch_size}")


# --------------------------------------------------------------------------- linreg train's flags


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One ``linreg train`` flag per option that has one (same names, dashes for underscores), defaults from
    ``OPTIONS``; values are checked by fit, as from Python."""
    group = parser.add_argument_group("training options (LinearRegressor's keyword arguments)")
    for option in OPTIONS:
        flag = option.flag
        if flag is None:
            continue
        spelling = "--" + option.name.replace("_", "-")
        default_note = f"default {'none' if option.default is None else option.default}"
        help_text = f"{flag.help}; {default_note}" if flag.help else default_note
        if flag.kind == "switch":  # absent: the option's default (None means "decided by the other options")
            group.add_argument(spelling, action="store_true", default=option.default, help=flag.help or None)
        elif flag.kind == "negated":
            group.add_argument("--no-" + option.name.replace("_", "-"), dest=option.name, action="store_false",
                               help=flag.help or None)
        elif flag.kind == "choice":
            group.add_argument(spelling, choices=option.choices, default=option.default, help=help_text)
        elif flag.kind == "pair":
            group.add_argument(spelling, type=flag.parse, nargs=2, default=option.default, metavar=flag.metavar,
                               help=help_text)
        else:
            group.add_argument(spelling, type=flag.parse or float, default=option.default, metavar=flag.metavar,
                               help=help_text)


def params_from_flags(args: argparse.Namespace, **others: Any) -> dict[str, Any]:
    """LinearRegressor's keyword arguments from parsed flags: every flagged option, then ``others`` (the options
    the CLI sets from flags of its own, such as ``random_state`` from ``--seed``)."""
    params = {option.name: getattr(args, option.name) for option in OPTIONS if option.flag is not None}
    params["betas"] = tuple(params["betas"])
    params.update(others)
    return params


# --------------------------------------------------------------------------- docs


def markdown_table() -> str:
    """The README's options table, one row per option."""
    lines = ["| option | values (default) | what it does, and the reference it equals step for step |",
             "|---|---|---|"]
    lines += [f"| `{option.name}` | {option.values} | {option.doc} |" for option in OPTIONS]
    return "\n".join(lines)


def signature_doc() -> str:
    """One line per option, for the estimator's docstring."""
    return "\n".join(f"    {option.name} : {option.values.replace('`', '')}" for option in OPTIONS)


if __name__ == "__main__":
    print(markdown_table())
