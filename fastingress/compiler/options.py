"""`CompileOptions`: the few settings the compiler needs, passed in by the supervisor.

The compiler never reads the environment or the clock itself: the class selection, the current time
and the default certificate's Secret arrive here, so that `compile_config` stays a pure function of
(snapshot, options).
"""

from __future__ import annotations

import msgspec

from fastingress.model.objects import ObjectKey


class CompileOptions(msgspec.Struct, frozen=True):
    """Inputs of `compile_config` besides the snapshot; all have working defaults."""

    # IngressClasses whose spec.controller equals this are ours (design.md section 3)
    controller_name: str = "fastingress.io/ingress-controller"
    # a class name treated as ours when NO IngressClass object of that name exists (plain manifests);
    # an existing IngressClass of that name with another controller wins (then it is not ours)
    ingress_class: str = "fastingress"
    # seconds since the epoch for certificate expiry checks; 0 skips them (tests, `fastingress check`)
    now: int = 0
    # the kubernetes.io/tls Secret served when no SNI entry matches (FASTINGRESS_DEFAULT_TLS_SECRET);
    # None: the workers' self-signed certificate
    default_tls_secret: ObjectKey | None = None
