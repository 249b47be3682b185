"""Modules: the bricks agents are assembled from (recurrent memory; extractor/updater/retriever families)."""
