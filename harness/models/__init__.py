"""Models behind one protocol (``base.Model``): OpenAI-compatible, Anthropic, scripted, replay."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.config import ModelConfig
from harness.models.base import Model


def make_model(cfg: ModelConfig, run_dir: Path | None = None, on_wait: Callable[[str], None] | None = None,
               seed: int | None = None) -> Model:
    """The model a config names. Provider SDKs are imported only when used. ``on_wait`` is told
    each time a provider's call waits to be retried (an outage, a rate limit). ``seed``: the run's
    seed (the scripted model's path; an OpenAI-compatible request's sampling seed)."""
    if cfg.provider == "scripted":
        from harness.models.scripted import ScriptedModel

        return ScriptedModel.from_config(cfg.script, seed=seed or 0)
    if cfg.provider == "replay":
        from harness.models.replay import ReplayModel

        if not cfg.replay_run:
            raise ValueError("model.replay_run: the run directory to replay is required with provider replay")
        return ReplayModel(Path(cfg.replay_run))
    from harness.models.pricing import PriceTable
    from harness.models.retry import RetryPolicy

    retry = RetryPolicy.from_config(cfg, on_wait)

    prices = PriceTable.load(Path(cfg.prices))
    if cfg.provider == "openai":
        from harness.models.openai_model import OpenAIModel

        return OpenAIModel(cfg, prices, retry, seed=seed)
    from harness.models.anthropic_model import AnthropicModel

    return AnthropicModel(cfg, prices, retry)
