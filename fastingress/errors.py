"""The one exception hierarchy and the process exit codes, shared by the supervisor and the workers.

Translation problems (a broken Ingress, a missing Service) are *values* (`fastingress.model.Problem`),
never exceptions: the compiler skips what is broken and keeps going. Exceptions here are for what
stops a process or a source:

- `ConfigError`: bad settings at start-up; reports every problem at once; exit `ExitCode.CONFIG`.
- `SourceError`: a source could not read (retried with backoff, never fatal after the first sync).
- `TableError`: a shared-memory table segment that is missing, foreign, torn or of another schema;
  the reader keeps the table it has.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes; the supervisor reads workers' codes to halt boot-failure storms."""

    OK = 0
    ERROR = 1  # generic failure (and `fastingress check` found rejected objects)
    USAGE = 2  # bad command line (argparse's own convention)
    CONFIG = 3
    BOOT_FAILED = 4  # could not bind or load: restarting will not help
    TABLE_INCOMPATIBLE = 5


class FastIngressError(Exception):
    """Base of every exception fastingress raises on purpose."""


class ConfigError(FastIngressError):
    """Invalid static configuration; carries every problem found, not just the first."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class SourceError(FastIngressError):
    """A source failed to read its input; retried with jittered backoff."""


class TableError(FastIngressError):
    """A route-table segment cannot be used (missing, bad magic, schema mismatch, torn, truncated)."""
