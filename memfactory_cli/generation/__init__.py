"""Generation backends behind one interface: token-id prompts in, completion ids out."""

from memfactory_cli.generation.base import Generator, HFGenerator, SamplingParams

__all__ = ["Generator", "HFGenerator", "SamplingParams"]
