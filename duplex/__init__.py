"""duplex: a full-duplex speech dialogue runtime.

The core (this package) is sans-I/O: it consumes 20 ms audio frames and time
and returns events. Models, the server, the local client and the benchmark
are drivers around it.
"""

import os

__version__ = "0.1.0"

# numpy's OpenBLAS keeps one worker per core spinning for a while after every product.
# Ours are small (state heads, mel filters), so the workers only spin: a sixth of both
# cores under four server sessions (perf). Set before any module imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
