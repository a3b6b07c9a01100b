"""Dollar cost of a model call from a price table (``configs/prices.yaml``, USD per million tokens).

Token accounting, the same for every provider (see ``Usage``): ``input_tokens`` counts every input
token the call processed, cached ones included; ``cached_input_tokens`` (read from the provider's
prompt cache) and ``cache_write_tokens`` (written to it) are parts of that total. So the uncached
remainder is ``input - cached - write``, and each part is billed at its own rate.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.models.base import Usage
from harness.paths import REPO_ROOT

log = logging.getLogger(__name__)

# A dated snapshot of a listed model: claude-sonnet-4-5-20250929, gpt-4.1-2025-04-14.
_DATED = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float
    cache_write: float

    def cost(self, usage: Usage) -> float:
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        written = min(usage.cache_write_tokens, usage.input_tokens - cached)
        uncached = usage.input_tokens - cached - written
        return (uncached * self.input + cached * self.cached_input + written * self.cache_write
                + usage.output_tokens * self.output) / 1e6


class PriceTable:
    """Prices by model name; an unknown model costs 0 and is warned about once."""

    def __init__(self, prices: dict[str, Price], aliases: dict[str, str] | None = None,
                 source: str | None = None) -> None:
        self.prices = {k.lower(): v for k, v in prices.items()}
        self.aliases = {k.lower(): v.lower() for k, v in (aliases or {}).items()}
        self.source = source
        self._warned: set[str] = set()

    @classmethod
    def load(cls, path: Path) -> PriceTable:
        """Read a price table. A relative path that does not exist from the working directory is
        looked up from the repository root, so ``configs/prices.yaml`` works from anywhere."""
        if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
            path = REPO_ROOT / path
        data = yaml.safe_load(path.read_text()) or {}
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, dict):
            raise ValueError(f"{path}: expected a mapping 'models: {{name: {{input: ..., output: ...}}}}'")
        prices: dict[str, Price] = {}
        aliases: dict[str, str] = {}
        for name, entry in models.items():
            try:
                prices[str(name)] = _price(entry)
            except (TypeError, ValueError, KeyError) as e:
                raise ValueError(f"{path}: models.{name}: {e}") from None
            for alias in entry.get("aliases") or []:
                aliases[str(alias)] = str(name)
        return cls(prices, aliases, source=str(path))

    def lookup(self, model: str) -> Price | None:
        """The price of ``model``: exact name, alias, name after a ``provider/`` prefix, or a dated
        snapshot of a listed name. Never a looser prefix match: gpt-5-mini is not gpt-5."""
        name = model.strip().lower()
        candidates = [name, name.rsplit("/", 1)[-1]]
        candidates += [_DATED.sub("", c) for c in candidates]
        for c in candidates:
            c = self.aliases.get(c, c)
            if c in self.prices:
                return self.prices[c]
        return None

    def cost(self, model: str, usage: Usage) -> float:
        """USD for one call; 0.0 (and one warning per model name) when the model is not listed."""
        price = self.lookup(model)
        if price is None:
            if model not in self._warned:
                self._warned.add(model)
                log.warning("no price for model %r in %s: its calls are counted as costing $0",
                            model, self.source or "the price table")
            return 0.0
        return price.cost(usage)

    def snapshot(self) -> dict[str, Any]:
        """The table as plain data (USD per million tokens), for the run directory."""
        return {
            "unit": "USD per million tokens",
            "source": self.source,
            "models": {name: asdict(p) for name, p in sorted(self.prices.items())},
            "aliases": dict(sorted(self.aliases.items())),
        }


def _price(entry: Any) -> Price:
    if not isinstance(entry, dict):
        raise TypeError("expected a mapping with input and output")
    unknown = set(entry) - {"input", "output", "cached_input", "cache_write", "aliases"}
    if unknown:
        raise KeyError(f"unknown keys {sorted(unknown)}")
    inp, out = float(entry["input"]), float(entry["output"])
    cached = float(entry.get("cached_input", inp))
    write = float(entry.get("cache_write", inp))
    if min(inp, out, cached, write) < 0:
        raise ValueError("prices cannot be negative")
    return Price(input=inp, output=out, cached_input=cached, cache_write=write)


def price_snapshot(prices: str) -> dict[str, Any]:
    """The price table a run starts with (kept in its record, so its dollars can be checked later);
    empty when the table cannot be read."""
    try:
        return PriceTable.load(Path(prices)).snapshot()
    except (OSError, ValueError, AttributeError):
        return {}
