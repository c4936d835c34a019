"""One timed restore in a fresh process, with the napari-svi of a given source folder (any version).

Run as a script, not imported: ``python _clip_worker.py JOB.json``, with ``PYTHONPATH`` naming the
source folder. ``JOB.json`` holds ``src`` (the folder that must provide ``napari_svi``), ``input``
and ``output`` (``.npy`` files), ``spec`` (``OperatorSpec`` arguments), ``options`` (keyword
arguments of ``restore``) and ``threads``. Prints one JSON line: ``seconds`` (the ``restore`` call,
prior loading included), ``peak_mb`` (the process's resident high-water mark above the start of the
call, Linux ``VmHWM`` reset through ``/proc/self/clear_refs``), the version and the load average.
It uses only what every napari-svi release has (``restore``, ``OperatorSpec``), so it runs the old
code as well as the new.
"""

import json
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    sys.path.pop(0)  # the folder of this script (benchmark/) must not shadow top-level modules
    job = json.loads(Path(sys.argv[1]).read_text())
    src = Path(job["src"]).resolve()
    sys.path.insert(0, str(src))

    import numpy as np
    import torch

    torch.set_num_threads(int(job["threads"]))
    from napari_svi.operators import OperatorSpec
    from napari_svi.restore import restore

    here = Path(sys.modules["napari_svi.restore"].__file__).resolve()  # (the package exports a function of that name)
    if src not in here.parents:
        raise SystemExit(f"napari_svi.restore was imported from {here}, not from {src}")

    def status_kib(field):
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return None

    y = np.load(job["input"])
    spec = OperatorSpec(**job["spec"])
    base = status_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    t0 = time.perf_counter()
    result = restore(y, spec, **job["options"])
    seconds = time.perf_counter() - t0
    peak = status_kib("VmHWM")
    np.save(job["output"], np.asarray(result.restored, np.float32))
    print(json.dumps({
        "seconds": seconds,
        "peak_mb": None if peak is None or base is None else max(0.0, (peak - base) / 1024),
        "napari_svi_version": result.metadata.get("napari_svi_version", "?"),
        "file": str(here),
        "threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }))
