"""``memfactory infer``: read one document through the memory agent and show the memory after each chunk."""

from __future__ import annotations

from pathlib import Path

from memfactory_cli.config import load_recipe
from memfactory_cli.errors import UserError
from memfactory_cli.models.loading import load_model, load_tokenizer, resolve_device, resolve_model_path
from memfactory_cli.workflows.common import build_agent, eval_generator


def run(recipe: str | None, overrides: list[str], doc: str, question: str, model: str | None = None) -> dict:
    from rich.console import Console
    from rich.panel import Panel

    cfg = load_recipe(recipe, overrides)
    if model:
        cfg.model.name_or_path = model
    path = Path(doc)
    if not path.is_file():
        raise UserError(f"document not found: {doc}")
    try:
        context = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{doc}: not a UTF-8 text file") from None
    if not question.strip():
        raise UserError("--question must not be empty")
    device = resolve_device(cfg.trainer.device)
    model_path = resolve_model_path(cfg.model.name_or_path)
    tokenizer = load_tokenizer(model_path)
    agent = build_agent(cfg, tokenizer)
    lm = load_model(cfg.model, device, model_path).eval()
    row = {"id": "0", "question": question, "context": context, "answers": []}
    (trajectory,) = agent.rollout([agent.episode(row)], eval_generator(lm, tokenizer, cfg.eval))
    console = Console()
    for i, memory in enumerate(trajectory.memories, 1):
        console.print(Panel(memory or "[dim](empty)[/dim]", title=f"memory after chunk {i}/{len(trajectory.memories)}"))
    console.print(Panel(trajectory.answer or "[dim](empty)[/dim]", title="answer", border_style="green"))
    return trajectory.to_record()
