"""What the fake provider answers in the scaffold tests and the demo: mini-swe-agent's three
iterations (edit src/db.rs, build, submit; then two small edits), and a probe for the key canary."""

from __future__ import annotations

from harness.paths import REPO_ROOT
from tests.gateway.fakes import Reply, bash

CANARY = "sk-canary-scaffold-93e1c7a5d0b84f26"
# The canary split in two, so that the command searching for it does not contain it. Searched: the
# whole filesystem but the image's own /usr and /opt (built before any key existed), and the
# environment of every process.
FIND_CANARY = ("p1=sk-canary-scaffold-; p2=93e1c7a5d0b84f26; pat=$p1$p2; "
               "hits=$(grep -rlsF --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev --exclude-dir=usr "
               "--exclude-dir=opt -e \"$pat\" / ; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' "
               "| grep -cF \"$pat\"); echo \"canary hits: [$hits]\"")
STAGE1 = REPO_ROOT / "reference/stage01-brute-force/src"
BUILD = ("CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 "
         "cargo build --release --offline --target-dir target/quick 2>&1 | tail -3")


def mini_three_iterations() -> list[Reply]:
    """Eight model turns, each one call of mini-swe-agent's ``bash`` tool."""
    db, distance = (STAGE1 / "db.rs").read_text(), (STAGE1 / "distance.rs").read_text()
    write = (f"cat > src/db.rs <<'STAIRCASE_EOF'\n{db}STAIRCASE_EOF\n"
             f"cat > src/distance.rs <<'STAIRCASE_EOF'\n{distance}STAIRCASE_EOF\n")
    return [
        bash("grep -n 'todo!' src/db.rs src/distance.rs | head", "THOUGHT: find the stubs."),
        bash(write, "THOUGHT: a brute-force scan first."),
        bash(BUILD, "THOUGHT: build it."),
        bash("submit 'brute force: scan every vector'", "THOUGHT: submit."),
        bash("sed -i '1i // iteration 2: a note' src/db.rs && " + FIND_CANARY, "THOUGHT: a small change."),
        bash("submit 'iteration 2: a note'"),
        bash("sed -i '1i // iteration 3: another note' src/db.rs"),
        bash("submit 'iteration 3: another note'"),
    ]
