"""What every gencond process sets up before it imports numba, FFCV or torch: `launch.cli.main`
runs each command through `run`, and every entry point goes through main (the `gencond`
script, `python -m launch.cli`, each torchrun rank, each SLURM / submitit task).

- numba's threading layer: OpenMP, else numba's own workqueue, TBB only when neither loads.
  TBB (numba's default, from the system's libtbb) deadlocks at interpreter exit when the process
  may use one CPU (affinity or cgroup quota) and a parallel kernel ran on a thread other than
  the main one, as FFCV's loader and writer threads do: the final garbage collection of numba's
  tbbpool module waits in `task_group::wait` for a task no thread will ever run
  (numba/numba#10556). The user's own NUMBA_THREADING_LAYER / _PRIORITY are kept.
- Ctrl-C (SIGINT): always ends the command with one `interrupted` line and exit 130. Python
  raises KeyboardInterrupt wherever the main thread happens to be, and some places drop it: a
  ctypes callback (llvmlite's object-cache hook while numba compiles FFCV's kernels) prints an
  "Exception ignored" trace and goes on, and bare `except:` clauses in FFCV swallow it. Such a
  dropped interrupt is raised again (silently) until it reaches the command, and a process that
  still has not stopped a few seconds later exits 130 all the same.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

INTERRUPTED_EXIT = 130
NUMBA_LAYERS = "omp workqueue tbb"  # numba's THREADING_LAYER_PRIORITY: TBB last
REDELIVER_S = 1.0  # a dropped interrupt is raised again this often
GIVE_UP_S = 15.0  # ... and after this long the process exits 130 without unwinding further


def choose_threading_layer() -> None:
    """Put TBB last among numba's threading layers, before numba is imported (and, where it
    already is but has not started its threads, in its loaded config too)."""
    if os.environ.get("NUMBA_THREADING_LAYER", "default").lower() != "default":
        return  # the user chose one
    os.environ.setdefault("NUMBA_THREADING_LAYER_PRIORITY", NUMBA_LAYERS)
    config = sys.modules.get("numba.core.config")
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if config is not None and not getattr(parallel, "_is_initialized", False):
        config.THREADING_LAYER_PRIORITY = os.environ["NUMBA_THREADING_LAYER_PRIORITY"].split()


class _Interrupts:
    """SIGINT -> KeyboardInterrupt, raised again while something drops it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.since: float | None = None  # when the first SIGINT came
        self.reached = False  # the KeyboardInterrupt reached `run`
        self.watchdog: threading.Thread | None = None
        self.dropped = threading.Event()  # seen dropped: the watchdog raises it again at once

    def handler(self, signum, frame) -> None:
        if os.getpid() != self.pid:  # a forked worker: its parent decides
            raise KeyboardInterrupt
        if self.reached:  # a late repeat of an interrupt the command has already ended on
            return
        self._start()
        raise KeyboardInterrupt

    def _start(self) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.watchdog = threading.Thread(target=self._watch, name="gencond-sigint", daemon=True)
            self.watchdog.start()

    def unraisable(self, hook: Callable) -> Callable:
        def on_unraisable(info) -> None:
            if isinstance(info.exc_value, KeyboardInterrupt) and os.getpid() == self.pid:
                self.dropped.set()  # dropped inside a callback or __del__: raise it again
                return
            hook(info)

        return on_unraisable

    def thread_hook(self, hook: Callable) -> Callable:
        def on_thread_exception(info) -> None:
            if issubclass(info.exc_type, KeyboardInterrupt) and os.getpid() == self.pid:
                self._start()
                self.dropped.set()
                return
            hook(info)

        return on_thread_exception

    def _watch(self) -> None:
        assert self.since is not None
        while not self.reached:
            self.dropped.wait(REDELIVER_S)  # from another thread: never inside the hook
            self.dropped.clear()
            if self.reached:
                return
            if time.monotonic() - self.since > GIVE_UP_S:
                sys.stderr.write("interrupted\n")
                sys.stderr.flush()
                os._exit(INTERRUPTED_EXIT)
            _thread.interrupt_main()  # swallowed by an `except:` somewhere: raise it again


def run(body: Callable[[], int], on_interrupt: Callable[[], int]) -> int:
    """body() with numba's threading layer chosen and Ctrl-C made reliable: any SIGINT ends in
    on_interrupt() (which prints the one line and returns the exit status)."""
    choose_threading_layer()
    if threading.current_thread() is not threading.main_thread():
        return body()  # signal handlers belong to the main thread (a sweep's worker thread)
    state = _Interrupts()
    previous = signal.signal(signal.SIGINT, state.handler)
    hooks = sys.unraisablehook, threading.excepthook
    sys.unraisablehook = state.unraisable(sys.unraisablehook)
    threading.excepthook = state.thread_hook(threading.excepthook)
    try:
        try:
            status = body()
        except KeyboardInterrupt:
            state.reached = True
            return on_interrupt()
        if state.since is not None:  # swallowed on the way and the command went on
            state.reached = True
            return on_interrupt()
        return status
    finally:
        state.reached = True
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook, threading.excepthook = hooks
