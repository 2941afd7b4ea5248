"""`Problem`: a translation problem as a value (an invalid object, a missing Service, a lost conflict).

Problems never stop a build: the broken part is skipped, the rest keeps routing. Each one names the
object (kind + key), the field, a stable CamelCase reason code (used as the Kubernetes Event reason
and as a metric label) and one human sentence.
"""

from __future__ import annotations

import msgspec

from fastingress.model.objects import Kind, ObjectKey


class Problem(msgspec.Struct, frozen=True, order=True):
    """One problem with one object; ordered so that lists of problems sort deterministically."""

    kind: Kind
    key: ObjectKey
    field: str  # JSON path of the offending field, e.g. "spec.rules[0].http.paths[1].path"; "" for the object
    reason: str  # stable CamelCase code, e.g. "InvalidPath", "ServiceNotFound", "ConflictLost"
    message: str  # one human sentence
    rejected: bool = False  # True when the whole object was refused (as the API server would, or unparsable)
    origin: str = ""  # where the object came from, e.g. "manifests/app.yaml:12"; "" for the API server

    def __str__(self) -> str:
        """`namespace/name: message (field, origin)`: the `fastingress check` line format."""
        details = ", ".join(x for x in (self.field, self.origin) if x)
        return f"{self.key}: {self.message}" + (f" ({details})" if details else "")
