"""mesher-injector: a Kubernetes mutating admission webhook for the ServiceComb mesher sidecar."""

__version__ = "0.1.0"
