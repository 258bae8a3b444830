"""A hard wall-clock limit for one call, in the main thread and in any other thread.

math_verify's own timeouts use `signal.alarm`: whole seconds only, and a ValueError in any
thread but the main one. Here:

* main thread: `signal.setitimer` (sub-second) with a handler that raises `_Expired`, re-armed
  every `REFIRE_S` until the call ends, in case library code swallows the first one;
* other threads: a watchdog timer that injects `_Expired` into the calling thread with
  `PyThreadState_SetAsyncExc`, so the limit holds without signals.

Both interrupt Python code between bytecodes; neither can stop one long C call that holds
the GIL, which is why callers also bound the size of what they hand in. The exception
derives from BaseException so that `except Exception` blocks in math_verify or sympy do
not swallow it.
"""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from typing import Callable, TypeVar

T = TypeVar("T")
REFIRE_S = 0.05


class TimeLimitExceeded(Exception):
    """The call ran past its limit and was interrupted."""


class _Expired(BaseException):
    pass


def call_with_limit(fn: Callable[[], T], seconds: float) -> T:
    """Run `fn()` and return its result, or raise TimeLimitExceeded after `seconds`."""
    if seconds is None or seconds <= 0:
        return fn()
    if threading.current_thread() is threading.main_thread() and _signals_usable():
        return _with_itimer(fn, seconds)
    return _with_async_exc(fn, seconds)


def _signals_usable() -> bool:
    try:
        signal.getsignal(signal.SIGALRM)
    except (ValueError, AttributeError):  # no SIGALRM (Windows) or a sub-interpreter
        return False
    return hasattr(signal, "setitimer")


def _with_itimer(fn: Callable[[], T], seconds: float) -> T:
    armed = [True]

    def handler(signum, frame):
        if armed[0]:
            raise _Expired()

    start = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, handler)
    old_timer = signal.setitimer(signal.ITIMER_REAL, seconds, REFIRE_S)
    try:
        try:
            return fn()
        finally:
            armed[0] = False
            _restore_itimer(old_handler, old_timer, start)
    except _Expired:
        armed[0] = False
        _restore_itimer(old_handler, old_timer, start)
        raise TimeLimitExceeded(f"call exceeded {seconds:.3g} s") from None


def _restore_itimer(old_handler, old_timer: tuple[float, float], start: float) -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old_handler if old_handler is not None else signal.SIG_DFL)
    delay, interval = old_timer
    if delay > 0:  # someone else's timer was running: give back what is left of it
        signal.setitimer(signal.ITIMER_REAL, max(delay - (time.monotonic() - start), 1e-3), interval)


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


def _with_async_exc(fn: Callable[[], T], seconds: float) -> T:
    tid = threading.get_ident()
    lock = threading.Lock()
    done = [False]

    def fire() -> None:
        with lock:
            if not done[0]:
                _set_async_exc(tid, _Expired)

    watchdog = threading.Timer(seconds, fire)
    watchdog.daemon = True
    watchdog.start()
    try:
        try:
            return fn()
        finally:
            with lock:
                done[0] = True
                _set_async_exc(tid, None)  # clear an injection that has not been delivered yet
            watchdog.cancel()
    except _Expired:
        with lock:
            done[0] = True
            _set_async_exc(tid, None)
        watchdog.cancel()
        raise TimeLimitExceeded(f"call exceeded {seconds:.3g} s") from None
