"""Where the template comes from: a file (file.py) or a ConfigMap through the API (configmap.py)."""
