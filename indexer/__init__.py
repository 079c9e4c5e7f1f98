"""parasal.indexer: datasets and model specs -> saliency bundles (FAISS + LMDB)."""
