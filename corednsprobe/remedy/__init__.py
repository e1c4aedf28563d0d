"""remedy: turning a diagnosis into at most one safe restart.

The rails and decisions (pure), the history of attempts, the writes to the API
and the remediator that owns the one action in flight. Never probes.
"""
