"""When a step does periodic work (log, evaluate, save): big_vision's `itstime`."""


def itstime(step: int, every: int, total: int, *, last: bool = True) -> bool:
    """True at every `every`-th step (never if `every` is 0) and, if `last`, at step `total`.

    Steps count from 1 (the step just taken), as logged.
    """
    return bool(every and step % every == 0) or (last and step == total)
