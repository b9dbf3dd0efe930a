"""What every benchmark's result file starts with: the command that ran it, then the machine it ran
on with its CPU model and load averages (the machine is shared: a figure means little without its
load), then the benchmark's own figures."""

import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def load_average():
    """The 1, 5 and 15-minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


# Taken when a benchmark starts (it imports this module first thing), beside the one when it writes its result.
LOAD_AT_START = load_average()


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def machine(**extra):
    """The CPU, the Python and torch, the commit and date, anything `extra` names (a GPU, library versions), and the load."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu_model(), "nproc": os.cpu_count(), "python": platform.python_version(), "torch": __import__("torch").__version__,
            "commit": commit, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra,
            "load_average": {"start": LOAD_AT_START, "end": load_average()}}


def write_result(path, figures, **machine_extra):
    """Writes the command, the machine and `figures` to `path` as JSON, and returns what it wrote."""
    record = {"command": " ".join(["PYTHONPATH=engine", sys.executable] + sys.argv), "machine": machine(**machine_extra), **figures}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    return record
