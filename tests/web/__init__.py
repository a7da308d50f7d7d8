"""Tests of injector.web: over real HTTPS and real sockets."""
