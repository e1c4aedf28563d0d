"""A local stand-in Kubernetes cluster for the demo and the tests.

An aiohttp API server speaking the real wire protocol for the resources
corednsprobe uses, small controllers (ReplicaSet, kubelet, EndpointSlice, PDB),
and a DNS backend that makes each sandbox pod really answer DNS. Never imported
by the service's own code paths.
"""
