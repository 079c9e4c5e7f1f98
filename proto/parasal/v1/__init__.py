"""Generated gRPC stubs for parasal.v1 (do not edit; run proto/generate.py)."""
