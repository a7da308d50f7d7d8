"""Cluster I/O through kubernetes-asyncio: the template ConfigMap's watch, cluster reads,
restart execution."""
