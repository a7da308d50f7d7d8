"""What an operator sees: Prometheus metrics and structlog JSON lines."""
