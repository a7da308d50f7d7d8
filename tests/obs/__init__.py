"""Tests of injector.obs: logs, metrics, the monitoring pack against a real Prometheus."""
