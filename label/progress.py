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
    _drawn: float = 0.0

    def update(self, statuses: list[str]) -> None:
        self.done += len(statuses)
        self.errors.update(s for s in statuses if s != "ok")
        now = time.monotonic()
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

    def summary(self) -> str:
        seconds = time.monotonic() - self.started
        by_code = ", ".join(f"{code} {n}" for code, n in self.errors.most_common()) or "none"
        skipped = f", {self.skipped} already done" if self.skipped else ""
        return (f"labelled {self.done} files in {duration(seconds)} ({self.rate:.1f} files/s{skipped}); "
                f"errors: {by_code}")  # fmt: skip

    def finish(self) -> None:
        if self.stream.isatty():
            self.stream.write("\n")
        self.stream.write(self.summary() + "\n")
        self.stream.flush()
