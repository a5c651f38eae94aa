"""duplex: a full-duplex speech dialogue runtime.

The core (this package) is sans-I/O: it consumes 20 ms audio frames and time
and returns events. Models, the server, the local client and the benchmark
are drivers around it.
"""

__version__ = "0.1.0"
