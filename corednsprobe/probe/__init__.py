"""probe: how a DNS question reaches a target and what its answer means.

The DNS codec, the UDP/TCP exchange engine, the application view through
aiodns, the check catalogue and the fixed-rate rounds. Never knows what a
verdict is.
"""
