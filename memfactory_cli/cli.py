"""The ``memfactory`` command line: thin commands over workflow functions, heavy imports deferred."""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from memfactory_cli.errors import UserError

app = typer.Typer(
    help="Train, evaluate and serve memory-augmented LLM agents with reinforcement learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Dataset tools.", no_args_is_help=True)
app.add_typer(data_app, name="data")

OVERRIDES = typer.Argument(None, help="Dot-overrides, e.g. trainer.max_steps=2 output.dir=runs/smoke")


@app.command()
def train(recipe: str = typer.Argument(..., help="Recipe YAML."), overrides: Optional[list[str]] = OVERRIDES) -> None:
    """Train an agent with GRPO as the recipe says."""
    from memfactory_cli.workflows import train as workflow

    workflow.run(recipe, overrides or [])


@app.command()
def infer(
    doc: str = typer.Option(..., "--doc", help="Text file to read."),
    question: str = typer.Option(..., "--question", help="Question to answer."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="Recipe YAML (agent and model settings)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model folder, e.g. runs/x/final (default: the recipe's)."),
    overrides: Optional[list[str]] = OVERRIDES,
) -> None:
    """Read a document chunk by chunk, print the memory after each chunk, then the answer."""
    from memfactory_cli.workflows import infer as workflow

    workflow.run(recipe, overrides or [], doc, question, model)


@app.command(name="list")
def list_registered() -> None:
    """Show every registry family and its members."""
    from rich.console import Console
    from rich.table import Table

    from memfactory_cli.workflows.listing import families

    table = Table(title="memfactory registries")
    for col in ("family", "name", "description"):
        table.add_column(col)
    for family, members in families().items():
        for name, doc in members or [("-", "(none yet)")]:
            table.add_row(family, name, doc)
    Console().print(table)


@data_app.command("synth")
def data_synth(
    out: str = typer.Option("data/synth", "--out", help="Folder for train.json and eval.json."),
    seed: int = typer.Option(0, "--seed"),
    n_train: int = typer.Option(512, "--n-train"),
    n_eval: int = typer.Option(64, "--n-eval"),
    people: int = typer.Option(4, "--people", help="People per document (one answers, the rest distract)."),
    filler: int = typer.Option(12, "--filler", help="Filler sentences per document (sets the length)."),
    multi_hop: float = typer.Option(0.0, "--multi-hop", help="Fraction of two-hop questions."),
) -> None:
    """Write a seeded synthetic long-document QA set in MemAgent's schema."""
    from memfactory_cli.workflows.data import synth_to_files

    options = dict(n_train=n_train, n_eval=n_eval, people=people, filler_sentences=filler, multi_hop_fraction=multi_hop)
    for split, path in synth_to_files(out, seed, options).items():
        print(f"{split}: {path}")


@app.command()
def version() -> None:
    """Print the version."""
    from memfactory_cli import __version__

    print(__version__)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    try:
        app()
    except UserError as exc:
        print(f"memfactory: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("memfactory: interrupted", file=sys.stderr)
        sys.exit(130)
