"""Events: one JSON object a line on stdout, flushed at once so the server sees each as it happens.

Everything else the engine prints goes to stderr, which the server keeps as the job's log.
"""

import json
import math
import sys
import time


def _clean(value):
    # JSON has no NaN or infinity; a diverged loss is reported as null rather than breaking the line.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


_silent = False


def silence():
    """A process that is not rank 0 of a torchrun group: its events would repeat rank 0's."""
    global _silent
    _silent = True


def emit(event_type, **fields):
    if _silent:
        return
    record = {"type": event_type, "time": round(time.time(), 3)}
    record.update({k: _clean(v) for k, v in fields.items()})
    sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def log(message):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
