"""A second thread that gathers the next mini-batches while the training loop computes this one.

Shapes (as in ``kernels.cpu``)::

    X (n_samples, n_features), Y (n_samples, n_outputs)  C-contiguous, float32 or float64
    order (n_train,) int64           the epoch's row order, written by the training loop
    weights (n_samples,) float64     sample weights (empty: all 1)
    slots_X (SLOTS, batch, n_features), slots_Y (SLOTS, batch, n_outputs), slots_w (SLOTS, batch or 0)
                                     a ring of gathered batches, in X's dtype (weights float64)
    flags (N_FLAGS * FLAG_STRIDE,) int64   the counters below, each on its own cache line

What it computes: nothing new. Batch g of a call of the training loop (counted
across its epochs) is the positions [start, stop) of its epoch's order. Either
the training thread computes it straight from X with that order, or this
module's producer thread has copied those rows into slot ``g % SLOTS`` and the
training thread runs the same row kernel on the slot with the rows in order.
The slots have X's array type, so it is the same compiled kernel on the same
values in the same order: the trajectory is bit-identical whichever thread
gathered which batch, whatever the timing or the thread count.

Why: a shuffled epoch is bound by the random row fetches (the report's
random-gather roofline). One thread doing fetches, arithmetic and the optimiser
step in turn keeps the memory system busy only part of the time; the producer
fetches while the training thread computes on rows already in cache.

Synchronisation, without locks (acquire/release atomics on ``flags``):

* Each batch is *claimed* once, by a compare-and-swap of ``NEXT_CLAIM`` from g
  to g + 1. The training thread claims a batch itself when the producer has
  not: on a machine whose other cores are busy, the training loop then runs as
  the single-thread loop does, instead of waiting for a thread that is not running.
* The producer claims batch g only when its slot is free (``CONSUMED > g - SLOTS``)
  and its epoch's order is written (``EPOCHS_READY > g // batches per epoch``),
  copies the rows, then publishes ``READY + slot = g + 1``.
* The training thread writes each epoch's order before publishing it
  (``EPOCHS_READY``) and, after each batch, ``CONSUMED = g + 1``. It rewrites the
  order only after every batch of the epoch was consumed, so never under a copy.
* ``STOP`` (the training loop returned) ends the producer wherever it waits;
  ``FAILED`` (the producer raised) makes the training loop return, and the
  error is raised by ``Producer.stop``.

The waits spin with the CPU's pause hint and yield the core (``sched_yield``) after
a few microseconds, so an idle producer gives way to the busy threads of a loaded machine.
"""

from __future__ import annotations

import platform
import threading

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

#: Gathered batches in flight: the producer runs at most this many batches ahead.
SLOTS = 4
#: Flag words apart (64 bytes): the producer's and the consumer's counters on separate cache lines.
FLAG_STRIDE = 8
NEXT_CLAIM, CONSUMED, EPOCHS_READY, STOP, FAILED, READY = (k * FLAG_STRIDE for k in range(6))
#: Flag words: the counters, then one READY word per slot.
N_FLAGS = 5 + SLOTS
#: Pause hints a wait spins before it yields the core.
SPINS_BEFORE_YIELD = 256
#: The largest slot the ring uses (bytes of one batch of X); larger batches are not pipelined.
MAX_SLOT_BYTES = 1 << 20

#: Switch for benchmarks and tests; also off when Numba may use one thread only (``numba.set_num_threads``).
ENABLED = True

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_POSIX = platform.system() in ("Linux", "Darwin", "FreeBSD")


@intrinsic
def load_acquire(typingctx, array, index):
    """``array[index]`` of an int64 array, read with acquire ordering."""
    if not (isinstance(array, types.Array) and array.dtype == types.int64 and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.load_atomic(builder.gep(data, [args[1]]), "acquire", 8)

    return types.int64(array, index), codegen


@intrinsic
def store_release(typingctx, array, index, value):
    """``array[index] = value`` of an int64 array, written with release ordering."""
    if not (isinstance(array, types.Array) and array.dtype == types.int64 and isinstance(index, types.Integer)
            and isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        stored = context.cast(builder, args[2], signature.args[2], types.int64)
        builder.store_atomic(stored, builder.gep(data, [args[1]]), "release", 8)
        return context.get_dummy_value()

    return types.void(array, index, value), codegen


@intrinsic
def spin_pause(typingctx):
    """The CPU's spin-wait hint (x86 ``pause``; nothing elsewhere)."""

    def codegen(context, builder, signature, args):
        if _X86:  # an LLVM intrinsic: Numba's LLVM has no inline-assembly parser
            pause = builder.module.declare_intrinsic("llvm.x86.sse2.pause", fnty=ir.FunctionType(ir.VoidType(), []))
            builder.call(pause, [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def compare_and_swap(typingctx, array, index, expected, new):
    """``array[index] = new`` if it holds ``expected`` (int64, atomically, acquire-release); True if it did."""
    if not (isinstance(array, types.Array) and array.dtype == types.int64 and isinstance(index, types.Integer)
            and isinstance(expected, types.Integer) and isinstance(new, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        old = context.cast(builder, args[2], signature.args[2], types.int64)
        value = context.cast(builder, args[3], signature.args[3], types.int64)
        result = builder.cmpxchg(builder.gep(data, [args[1]]), old, value, "acq_rel", "acquire")
        return builder.extract_value(result, 1)

    return types.boolean(array, index, expected, new), codegen


@intrinsic
def yield_core(typingctx):
    """Give the core to another runnable thread (POSIX ``sched_yield``; nothing elsewhere)."""

    def codegen(context, builder, signature, args):
        if _POSIX:
            fnty = ir.FunctionType(ir.IntType(32), [])
            builder.call(cgutils.get_or_insert_function(builder.module, fnty, "sched_yield"), [])
        return context.get_dummy_value()

    return types.void(), codegen


@njit(cache=True, nogil=True, inline="always")
def wait_a_little(spins):
    """One step of a wait: a pause hint, or a yield of the core every SPINS_BEFORE_YIELD steps."""
    if spins % SPINS_BEFORE_YIELD == SPINS_BEFORE_YIELD - 1:
        yield_core()
    else:
        spin_pause()
    return spins + 1


@njit(cache=True, nogil=True, inline="always")
def take_batch(flags, g, n_slots):
    """The training thread's turn at batch ``g``: 1 its slot holds it, 0 compute it from X (claimed here),
    -1 the producer failed."""
    ready = READY + (g % n_slots) * FLAG_STRIDE
    if load_acquire(flags, ready) == g + 1:
        return 1
    if compare_and_swap(flags, NEXT_CLAIM, g, g + 1):
        return 0
    spins = 0
    while load_acquire(flags, ready) != g + 1:  # the producer has it: it is copying it now
        if load_acquire(flags, FAILED) != 0:
            return -1
        spins = wait_a_little(spins)
    return 1


@njit(cache=True, nogil=True, inline="always")
def publish(flags, index, value):
    """``flags[index] = value`` for the other thread (release)."""
    store_release(flags, index, value)


class Producer:
    """The ring of one training run, and the thread that fills it during one call of the training loop.

    ``order`` is the training loop's order array (it writes each epoch's order there; the producer reads it).
    """

    def __init__(self, X: np.ndarray, Y: np.ndarray, order: np.ndarray, weights: np.ndarray,
                 batch_size: int) -> None:
        self.X, self.Y, self.order, self.weights, self.batch_size = X, Y, order, weights, batch_size
        self.per_epoch = -(-order.shape[0] // batch_size)
        self.slots_X = np.zeros((SLOTS, batch_size, X.shape[1]), X.dtype)
        self.slots_Y = np.zeros((SLOTS, batch_size, Y.shape[1]), Y.dtype)
        self.slots_w = np.zeros((SLOTS, batch_size) if weights.shape[0] else (SLOTS, 0))
        self.flags = np.zeros(N_FLAGS * FLAG_STRIDE, np.int64)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def ring(self) -> tuple:
        """What the training loop reads: the slots and the flags."""
        return self.slots_X, self.slots_Y, self.slots_w, self.flags

    def start(self, n_epochs: int) -> None:
        """Start gathering the batches of the next ``n_epochs`` epochs (one call of the training loop)."""
        from .cpu_train import produce_batches  # the loop's module imports this one

        self.flags[:] = 0
        self.flags[STOP] = 1
        args = [self.X, self.Y, self.order, self.weights, np.int64(n_epochs * self.per_epoch),
                np.int64(self.batch_size), self.slots_X, self.slots_Y, self.slots_w, self.flags]
        produce_batches(*args)  # STOP set: returns at once, compiled (or loaded) here, where errors show
        self.flags[STOP] = 0
        self._error = None

        def produce() -> None:
            try:
                produce_batches(*args)
            except BaseException as error:  # the training loop may be waiting: tell it, re-raise in stop()
                self._error = error
                self.flags[FAILED] = 1

        self._thread = threading.Thread(target=produce, name="linreg-gather", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the producer (the training loop has returned) and wait for its thread."""
        self.flags[STOP] = 1
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError("the mini-batch gather thread failed") from error


def pipelines(X: np.ndarray, batch_size: int, n_train: int, serial: bool) -> bool:
    """Whether a mini-batch run over X may take the producer thread: batches smaller than the data, C-contiguous
    data (the slots then have X's array type: the same compiled row kernel, the same bits), batches small enough
    for the ring, serial steps (a parallel step already uses the threads). ``ENABLED`` and the thread count
    (Numba's, at each call of the training loop) decide the rest."""
    return (serial and batch_size < n_train and X.flags.c_contiguous
            and batch_size * X.shape[1] * X.itemsize <= MAX_SLOT_BYTES)
