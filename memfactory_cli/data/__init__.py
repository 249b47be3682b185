"""Datasets: loaders for MemAgent / RULER files and hub ids, and a seeded synthetic long-document QA generator."""
