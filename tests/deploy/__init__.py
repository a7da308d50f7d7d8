"""deploy/: the manifests parse and agree with the code."""
