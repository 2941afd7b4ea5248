"""fastingress data plane: one uvloop worker process per core (see workers/main.py)."""
