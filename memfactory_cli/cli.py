"""The ``memfactory`` command line: thin commands over workflow functions, heavy imports deferred."""

from __future__ import annotations

import os
import sys

import typer

from memfactory_cli.errors import Interrupted, UserError

app = typer.Typer(
    help="Train, evaluate and serve memory-augmented LLM agents with reinforcement learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Dataset tools.", no_args_is_help=True)
app.add_typer(data_app, name="data")

OVERRIDES = typer.Argument(None, help="Dot-overrides, e.g. trainer.max_steps=2 output.dir=runs/smoke")


RESUME = typer.Option(None, "--resume", help="auto (the newest complete checkpoint in output.dir, if any) or a checkpoint folder.")


@app.command()
def train(
    recipe: str = typer.Argument(..., help="Recipe YAML."), overrides: list[str] | None = OVERRIDES, resume: str | None = RESUME
) -> None:
    """Train an agent with GRPO as the recipe says."""
    from memfactory_cli.workflows import train as workflow

    workflow.run(recipe, overrides or [], resume)


@app.command()
def check(
    recipe: str = typer.Argument(..., help="Recipe YAML."), overrides: list[str] | None = OVERRIDES, resume: str | None = RESUME
) -> None:
    """Find every problem in a recipe without training: names, files, token budgets, batch arithmetic, judge."""
    from memfactory_cli.workflows import check as workflow

    workflow.run(recipe, overrides or [], resume)


@app.command()
def infer(
    doc: str | None = typer.Option(None, "--doc", help="Text file to read."),
    question: str | None = typer.Option(None, "--question", help="Question to answer."),
    recipe: str | None = typer.Option(None, "--recipe", help="Recipe YAML (agent and model settings)."),
    model: str | None = typer.Option(None, "--model", help="Model folder, e.g. runs/x/final (default: the recipe's)."),
    reference: list[str] | None = typer.Option(None, "--reference", help="A reference answer (repeatable): adds scores."),
    html: str | None = typer.Option(None, "--html", help="Also write a self-contained HTML memory-trace viewer here."),
    from_results: str | None = typer.Option(
        None, "--from", help="Render the rows of a results.jsonl (`memfactory eval`) or a run's rollouts.jsonl (`memfactory train`) to --html; runs no model."
    ),
    set_names: list[str] | None = typer.Option(None, "--set", help="With --from: only rows of these sets."),
    limit: int | None = typer.Option(None, "--limit", help="With --from: only the first N rows."),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Read a document chunk by chunk, print the memory after each chunk, then the answer."""
    from memfactory_cli.workflows import infer as workflow

    if from_results is not None:
        if not html:
            raise UserError("--from needs --html out.html (where to write the viewer)")
        if doc or question:
            raise UserError("--from renders existing rows; drop --doc/--question")
        workflow.render_results(from_results, html, set_names, limit)
        return
    if not doc or question is None:
        raise UserError("infer needs --doc FILE and --question TEXT (or --from results.jsonl --html out.html)")
    workflow.run(recipe, overrides or [], doc, question, model, html, reference)


@app.command(name="eval")
def evaluate(
    set_names: list[str] = typer.Option(
        ..., "--set", help="Sets, comma-separated or repeated: eval_50, eval_100, eval_fwe_16384, synth_eval, a file..."
    ),
    recipe: str | None = typer.Option(None, "--recipe", help="Recipe YAML (agent, model, eval sampling)."),
    model: list[str] | None = typer.Option(None, "--model", help="Model(s) to compare, repeated (default: the recipe's)."),
    k: int | None = typer.Option(None, "--k", help="Samples per question, avg@k (default: eval.k)."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N questions of each set."),
    out: str | None = typer.Option(None, "--out", help="Output folder (default: runs/eval-<recipe>); re-runs resume."),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """avg@k of every set with every model: results.jsonl, summary.json/.md/.png in --out, resumable."""
    from rich.console import Console
    from rich.table import Table

    from memfactory_cli.report import comparison
    from memfactory_cli.workflows import eval_sets as workflow

    console = Console()
    entries = workflow.run(set_names, recipe, overrides or [], model, k, limit, out, progress=console.print)
    header, rows = comparison(entries)
    table = Table(title=f"avg@{entries[0]['k']} ± stderr over questions" if entries else "no results")
    for col in header:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command()
def serve(
    recipe: str | None = typer.Option(None, "--recipe", help="Recipe YAML (agent, model, default sampling)."),
    model: str | None = typer.Option(None, "--model", help="Model folder, alias or hub id (default: the recipe's)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default: this machine only)."),
    port: int = typer.Option(8000, "--port", help="Port (0 picks a free one)."),
    mode: str = typer.Option("agent", "--mode", help="agent: read long messages through the memory; model: the bare model."),
    name: str | None = typer.Option(None, "--name", help="Served model name (default: the model folder's name)."),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """An OpenAI-compatible server: /v1/models and /v1/chat/completions."""
    from memfactory_cli.workflows import serve as workflow

    workflow.run(recipe, overrides or [], model, host, port, mode, name)


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


@data_app.command("list")
def data_list() -> None:
    """Show the named evaluation and training sets and where their rows come from."""
    from rich.console import Console
    from rich.table import Table

    from memfactory_cli.data.sources import describe_sets

    table = Table(title="memfactory data sets (use with --set or data.train / data.eval)")
    for col in ("name", "what", "source"):
        table.add_column(col)
    for row in describe_sets():
        table.add_row(*row)
    Console().print(table)


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
        for line in str(exc).splitlines() or [""]:
            print(f"memfactory: error: {line}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as exc:
        print(f"memfactory: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("memfactory: interrupted", file=sys.stderr)
        sys.exit(130)
