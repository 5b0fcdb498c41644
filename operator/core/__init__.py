"""The operator's pure core: builders of child manifests, reconciliation plans and scaling decisions.

Pure: no kopf, kubernetes or Prometheus imports, and no clock reads (time is an argument).
"""
