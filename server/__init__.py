"""parasal.server: the gRPC service over saliency bundles."""
