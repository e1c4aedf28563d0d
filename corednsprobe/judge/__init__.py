"""judge: from outcomes to verdicts, per target and across targets.

Pure: no asyncio, sockets, clocks or Kubernetes; ``now`` is always passed in.
"""
