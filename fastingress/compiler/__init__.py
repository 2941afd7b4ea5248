"""The compiler: a Store snapshot -> CompiledConfig + Problems, pure and deterministic.

`compile_config` (alias `compile`) is the entry point; `compile_endpoints` recomputes only the
endpoints part when EndpointSlices alone change. Must not: do I/O, read clocks, start threads, or
import sources, supervisor, workers or kubernetes.
"""

from fastingress.compiler.compile import compile, compile_config
from fastingress.compiler.options import CompileOptions
from fastingress.compiler.upstreams import compile_endpoints

__all__ = ["CompileOptions", "compile", "compile_config", "compile_endpoints"]
