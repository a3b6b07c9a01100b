"""A whole scaffold run to look at: ``python -m tests.scaffolds.demo_mini RUN_DIR``.

Three iterations of mini-swe-agent (configs/mini-swe-agent-vllm.yaml) against the fake
OpenAI-compatible provider (the scripted turns of ``scripts.mini_three_iterations``), scored by the
real scorer on a small generated dataset; then ``staircase report RUN_DIR`` shows it. Prints the
run's summary and the provider's own token count beside the gateway's.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from harness.config import load_config
from harness.datasets.sources import generate_dataset
from harness.datasets.store import DatasetStore
from harness.events import ModelCall
from harness.ledger import read_events
from harness.paths import REPO_ROOT
from harness.run import Run
from tests.gateway.fakes import FakeOpenAI
from tests.scaffolds.scripts import CANARY, mini_three_iterations

KEY_ENV = "STAIRCASE_DEMO_PROVIDER_KEY"


def main(run_dir: Path) -> None:
    os.environ[KEY_ENV] = CANARY  # the "provider's key": it must show up nowhere but at the provider
    fake = FakeOpenAI().start()
    fake.replies += mini_three_iterations()
    data_dir = run_dir.parent / "data"
    store = DatasetStore(data_dir)
    if not store.exists("scaffold-demo"):
        generate_dataset(store, "scaffold-demo", n=5000, queries=300, dev_queries=50, dim=128, seed=7)
    cfg = load_config(REPO_ROOT / "configs/mini-swe-agent-vllm.yaml", [
        f"model.base_url={fake.url}/v1", f"model.api_key_env={KEY_ENV}", "model.name=fake-model",
        f"dataset.data_dir={data_dir}", "dataset.name=scaffold-demo", "budget.max_iterations=3",
        "scaffold.timeout_s=600"])
    run = Run.create(cfg, run_dir)
    summary = run.execute()
    calls = [e for e in read_events(run_dir) if isinstance(e, ModelCall)]
    print(json.dumps({"summary": summary.model_dump(), "provider_counted": {
        "input_tokens": fake.input_tokens, "output_tokens": fake.output_tokens, "requests": len(fake.requests)},
        "gateway_metered": {"input_tokens": sum(c.usage.input_tokens for c in calls),
                            "output_tokens": sum(c.usage.output_tokens for c in calls), "model_calls": len(calls)}},
        indent=1))
    fake.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
