"""fastingress: a fast Kubernetes Ingress controller."""

__version__ = "0.1.0"
