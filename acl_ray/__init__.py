"""acl_ray: Adversarial Contrastive Learning with Ray Train and Ray Tune."""

__version__ = "0.1.0"
