"""Backends that run jobs: on this machine (local) or on Amazon SageMaker."""
