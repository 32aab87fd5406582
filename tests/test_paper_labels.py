"""Row labels of the published tables are names a reader can read, not raw codec spec strings."""

from __future__ import annotations

import re

import pytest

from kakeya_lib import codecs, sweep
from kakeya_lib.paths import REPO_ROOT

PAPER_SWEEPS = sorted((REPO_ROOT / "sweeps").glob("paper-*.yaml"))
# a codec spec ("turboquant:bits=4", "kivi:bits=2|kivi:bits=2,mode=value") or a bare key=value list
SPEC_LIKE = re.compile(rf"^({'|'.join(map(re.escape, codecs.names()))})(:|$)|\||^[a-z_]+=[^ ]+(,[a-z_]+=[^ ]+)*$")


@pytest.mark.parametrize("path", PAPER_SWEEPS, ids=[p.name for p in PAPER_SWEEPS])
def test_every_row_of_a_paper_sweep_has_a_readable_label(path):
    tasks = sweep.load(path).tasks
    assert tasks, f"{path.name} expands to no cells"
    # depth rows are labelled by their depth, exp-mse rows by the configuration names of its table
    for task in (t for t in tasks if t.kind not in ("depth", "mse_layers", "mse_ctx_scaling")):
        for _, plan in task.plans():
            assert plan.label and not SPEC_LIKE.search(plan.label), (
                f"{path.name}: {task.cell.relpath} has a row labelled {plan.label!r}; give the entry a 'name'")


def test_the_label_check_catches_spec_strings():
    assert SPEC_LIKE.search("turboquant:bits=4") and SPEC_LIKE.search("kivi:bits=2|kivi:bits=2,mode=value")
    assert SPEC_LIKE.search("bits=4,norms=f16")
    assert SPEC_LIKE.search("identity")
    for readable in ("ours: mean only, no basis", "TurboQuant-4 +sink", "ours K step=0.45, V step=0.55", "KVTC 4+128 bits=0.5", "seed-tier1"):
        assert not SPEC_LIKE.search(readable)
