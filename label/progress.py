"""The job's progress line (files done of the total, rate, ETA, errors) and its summary."""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO


def duration(seconds: float) -> str:
    """`3725` -> `1h02m05s`, `65` -> `1m05s`, `4.2` -> `4s`."""
    s = int(round(seconds))
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


@dataclass
class Progress:
    """Counts rows as they are written; draws one line in place on a terminal, a line every
    `every_s` seconds elsewhere (a log)."""

    total: int  # videos this run labels (those already in OUT are not counted)
    skipped: int = 0  # already in OUT (--resume)
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    every_s: float = 10.0
    done: int = 0
    errors: Counter = field(default_factory=Counter)  # status -> rows
    started: float = field(default_factory=time.monotonic)
    first_at: float | None = None  # when the first row came (Ray started, the model loaded, a batch done)
    _drawn: float = 0.0

    def update(self, statuses: list[str]) -> None:
        now = time.monotonic()
        if self.first_at is None and statuses:
            self.first_at = now
        self.done += len(statuses)
        self.errors.update(s for s in statuses if s != "ok")
        tty = self.stream.isatty()
        if now - self._drawn >= (0.5 if tty else self.every_s) or self.done == self.total:
            self._drawn = now
            self.stream.write(("\r" if tty else "") + self.line() + ("" if tty else "\n"))
            self.stream.flush()

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-9)

    def line(self) -> str:
        pct = 100 * self.done / self.total if self.total else 100.0
        eta = duration((self.total - self.done) / self.rate) if self.done else "?"
        errors = sum(self.errors.values())
        return f"{self.done}/{self.total} files ({pct:.0f}%)  {self.rate:.1f} files/s  ETA {eta}  errors {errors}"

    def steady_rate(self) -> float:
        """Files/s from the first row on: the rate once start-up (Ray, the model) is over."""
        if self.first_at is None or self.done < 2:
            return self.rate
        return self.done / max(time.monotonic() - self.first_at, 1e-9)

    def summary(self) -> str:
        seconds = time.monotonic() - self.started
        by_code = ", ".join(f"{code} {n}" for code, n in self.errors.most_common()) or "none"
        skipped = f", {self.skipped} already done" if self.skipped else ""
        startup = ""
        if self.first_at is not None:
            first = duration(self.first_at - self.started)
            startup = f"; {self.steady_rate():.1f} files/s after the first answer at {first}"
        return (
            f"labelled {self.done} file{'' if self.done == 1 else 's'} in {duration(seconds)} "
            f"({self.rate:.1f} files/s{startup}{skipped}); "
            f"errors: {by_code}"
        )

    def finish(self) -> None:
        if self.stream.isatty():
            self.stream.write("\n")
        self.stream.write(self.summary() + "\n")
        self.stream.flush()
