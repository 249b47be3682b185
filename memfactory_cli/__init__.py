"""memfactory: train, evaluate and serve memory-augmented LLM agents with GRPO.

Layers, imported strictly downwards (checked by ``tests/test_layers.py``)::

    cli -> workflows -> trainer -> agents -> envs, rewards, report -> generation -> modules -> models, data -> config, registry
"""

__version__ = "0.1.0"
