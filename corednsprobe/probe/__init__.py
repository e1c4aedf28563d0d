"""probe: how a DNS question reaches a target and what its answer means.

The DNS codec (wire), the UDP/TCP exchange (engine), reply → Outcome
(classify, pure), the application view through aiodns (appview), the check
catalogue (checks) and the fixed-rate rounds. Never knows what a verdict is.
"""
