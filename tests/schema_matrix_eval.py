"""Running the generated cases in-process (tests/test_schema_matrix.py; and a survey:
``python -m tests.schema_matrix_eval`` prints every case that is not refused).

A context's config is composed once by Hydra; each case then applies its one override with
Hydra's own override parser and merge (what compose does last), and calls growth.run.prepare,
the checks every launch, sweep and study makes before it writes or submits anything."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from tests.schema_matrix import Case


@dataclass
class Outcome:
    case: Case
    error: str | None  # the exception's type, None when the input was accepted
    text: str  # the message (and its causes)

    @property
    def refused(self) -> bool:
        return self.error is not None and self.case.leaf.key in self.text


def message(exc: BaseException) -> str:
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def world(base: Path) -> dict[str, str]:
    """What the cases' contexts name: the shared datasets, a masks file that fits the embedded
    default's model, a results root and a directory that does not exist."""
    import torch

    from growth.masks import save_masks
    from growth.models.mlp import MLP
    from tests.conftest import shared_data_dir

    data = shared_data_dir()
    masks_file = base / "mlp-masks.pt"
    model = MLP((64,), 10, hidden=[100, 100])
    save_masks(masks_file, {n: torch.ones_like(model.get_parameter(n), dtype=torch.bool) for n in model.growable_weights()})
    return {"data": str(data or base / "no-shared-data"), "nowhere": str(base / "nowhere"), "masks_file": str(masks_file),
            "root": str(base / "results")}


class Evaluator:
    def __init__(self, fill: dict[str, str]):
        self.fill = fill
        self._bases: dict[tuple[str, ...], object] = {}

    def base(self, selects: tuple[str, ...]):
        if selects not in self._bases:
            from tests.conftest import compose_cfg

            self._bases[selects] = compose_cfg([*(o.format(**self.fill) for o in selects), "output.progress=false"],
                                               tmp_path=self.fill["root"])
        return self._bases[selects]

    def __call__(self, case: Case) -> Outcome:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from growth.run import prepare

        cfg = copy.deepcopy(self.base(case.leaf.selects))
        try:
            (override,) = OverridesParser.create().parse_overrides([case.overrides(self.fill)[-1]])
            ConfigLoaderImpl._apply_overrides_to_config([override], cfg)
            prepare(cfg)
        except Exception as exc:  # noqa: BLE001  (what is raised is what the test judges)
            return Outcome(case, type(exc).__name__, message(exc))
        return Outcome(case, None, "")


if __name__ == "__main__":
    import sys
    import tempfile

    from tests.schema_matrix import cases

    with tempfile.TemporaryDirectory() as tmp:
        evaluate = Evaluator(world(Path(tmp)))
        for case in cases():
            print(case.id, file=sys.stderr, flush=True)
            outcome = evaluate(case)
            if not outcome.refused:
                first = outcome.text.strip().splitlines()[:1]
                print(f"{case.id}\t{outcome.error}\t{first[0][:150] if first else ''}", flush=True)
        sys.exit(0)
