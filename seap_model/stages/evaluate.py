"""The evaluate stage: score SEAP, SEAP without its reference and the text-only baseline under the protocols of
``evaluate.protocols`` (``seap_model.eval.run``). Writes ``metrics.json`` (the headline, for ``dvc metrics
show``), ``tables.json``/``tables.md`` (everything, with item counts and seed spread), ``per_category.csv``, the
sweep CSVs and plot, and the self-contained ``report.html``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from seap_model.config import Params
from seap_model.eval.run import Evaluation
from seap_model.progress import write_run_record

log = logging.getLogger(__name__)


def evaluate(params: Params, fingerprint: Mapping[str, str]) -> dict:
    """Run every protocol of ``evaluate.protocols`` and write the tables, plots and report."""
    protocols = params.evaluate.protocols
    started = time.perf_counter()
    run = Evaluation(params)
    run.score_targets()
    run.render_systems()
    if "transfer" in protocols:
        run.swap_ratio()
    if "conflict" in protocols:
        run.conflict()
    if "unseen" in protocols:
        run.unseen_captions()
    if "memorisation" in protocols:
        run.memorisation()
    report = run.write_report([run.sweeps()])
    record = {"seconds": round(time.perf_counter() - started, 1), "cache_hits": run.cache.hits}
    write_run_record(run.out, {**record, "sampling": run.sampling.model_dump(mode="json")})
    log.info("evaluate: %s", run.tables.headline_line())
    log.info("evaluate: report written to %s", report)
    return run.tables.metrics()
