"""Tests of injector.core: in-process, no server."""
