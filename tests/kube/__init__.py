"""Tests of injector.kube against a recorded list/watch server."""
