"""Kubernetes integration (SPEC §9): the ImagePolicy CRD, watching ImagePolicy objects,
validating them at admission, and registry credentials from pull secrets.

Only ``crd`` and ``objects`` are pure; the rest talk to the API server through
lightkube and are imported only when a feature that needs them is switched on.
"""
