"""Models with routed (dual) batch norm."""

from acl_ray.algorithm.models.encoder import Encoder, build_encoder
from acl_ray.algorithm.models.routed_bn import RoutedBatchNorm, bn_eval, model_routes, set_route

__all__ = ["Encoder", "RoutedBatchNorm", "bn_eval", "build_encoder", "model_routes", "set_route"]
