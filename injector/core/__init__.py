"""The pure core: annotations, reviews, templates, patches, decisions, status and restart
plans. No I/O: no aiohttp, no Kubernetes client, no metrics or logs (import-linter)."""
