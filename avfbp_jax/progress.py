"""Progress of a long loop (training steps, clips prepared or predicted), on stderr.

On a terminal it is a rich progress bar redrawn in place; otherwise (logs, CI) it prints whole
plain lines, `label 120/500 (24%) 12.3 it/s ETA 0:00:31 loss 0.91`, at every tenth of the work and
at most `interval_s` apart, so a log never holds carriage-return fragments.
"""

import datetime
import sys
import time
from typing import IO

import rich.console
import rich.progress


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


class Progress:
    """Counts done of total units; `update(done, text)` sets the count and a trailing text."""

    def __init__(self, total: int, label: str = "", unit: str = "it", start: int = 0,
                 stream: IO[str] | None = None, interval_s: float = 30.0):
        self.total, self.label, self.unit = max(int(total), 0), label, unit
        self.start = self.done = int(start)
        self.text = ""
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self.t0 = self.last_line = time.perf_counter()
        self.bar = None
        if self.stream.isatty():
            console = rich.console.Console(file=self.stream)
            self.bar = rich.progress.Progress(
                rich.progress.TextColumn("{task.description}"),
                rich.progress.BarColumn(),
                rich.progress.MofNCompleteColumn(),
                rich.progress.TextColumn("{task.fields[rate]}"),
                rich.progress.TimeRemainingColumn(),
                rich.progress.TextColumn("{task.fields[text]}"),
                console=console, transient=False)
            self.task = self.bar.add_task(label, total=self.total, completed=self.start,
                                          rate="", text="")
            self.bar.start()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def rate(self) -> float:
        """Units per second since the start."""
        return (self.done - self.start) / max(time.perf_counter() - self.t0, 1e-9)

    def line(self) -> str:
        """The plain progress line for the current count."""
        rate = self.rate()
        eta = _duration((self.total - self.done) / rate) if rate > 0 else "?"
        percent = 100 * self.done // max(self.total, 1)
        parts = [self.label, f"{self.done}/{self.total} ({percent}%)",
                 f"{rate:.1f} {self.unit}/s", f"ETA {eta}", self.text]
        return " ".join(p for p in parts if p)

    def update(self, done: int | None = None, text: str | None = None, advance: int = 1) -> None:
        """Sets the count to done (or advances it) and the trailing text; draws when due."""
        before = self.done
        self.done = int(done) if done is not None else self.done + advance
        if text is not None:
            self.text = text
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, text=self.text,
                            rate=f"{self.rate():.1f} {self.unit}/s")
            return
        now = time.perf_counter()
        tenth = 10 * self.done // max(self.total, 1) > 10 * before // max(self.total, 1)
        if tenth or now - self.last_line >= self.interval_s:
            self.last_line = now
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Ends the display (the bar stays on screen)."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
