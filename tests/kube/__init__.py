"""Tests of injector.kube: the watch against a recorded list/watch server, the restart
loop against a stand-in Cluster."""
