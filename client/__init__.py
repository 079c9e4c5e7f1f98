"""parasal.client: Python SDK and CLI for a parasal server (no torch, no faiss)."""
