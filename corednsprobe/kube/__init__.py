"""kube: the one edge to the Kubernetes API.

Credentials and the permission self-check, list+watch informers, the
ClusterView and its TargetSets, the Lease election. Never decides anything.
"""
