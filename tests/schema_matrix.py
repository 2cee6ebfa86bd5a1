"""The bad-input matrix generated from the schemas (issue 15): every key of every schema section
(the core sections of growth.config.schema, and the schema of every registered dataset, model,
method, logger and stop rule), bad values by type, and what the framework must do with each.

A key is a field of a schema class in the section where a config holds it (``trainer.lr``,
``method.drop_fraction`` of RiglConfig, ``growth.stop.noise_factor`` of NoiseTolConfig). A schema
shared by several registry entries is tried once, in the context of its first entry. Each case is
either refused with a message naming the key, or listed in ACCEPTED with the reason: a key added
without its checks makes tests/test_schema_matrix.py fail until it has them (or a reason).

Not a test module: tests/test_schema_matrix.py runs the cases in-process, and
tests/test_cli_matrix.py runs every one of them on the command line (tests/cli_matrix_driver.py).
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from dataclasses import dataclass
from typing import Any

from growth.config.checks import field_checks

DATA = "{data}"  # the shared datasets (../shared/data)
NOWHERE = "{nowhere}"  # a directory that does not exist


@dataclass(frozen=True)
class Leaf:
    key: str  # as the command line names it
    schema: str  # the schema class that declares it
    kind: str  # float | int | bool | str | enum | list | dict | any
    item: str | None  # the kind of a list's items
    nullable: bool
    checked: bool  # the field carries value checks (growth.config.checks)
    selects: tuple[str, ...]  # overrides that choose the section's schema (and a context it fits)

    @property
    def id(self) -> str:
        return f"{self.schema}.{self.key.rpartition('.')[2]}@{self.key}"


@dataclass(frozen=True)
class Case:
    leaf: Leaf
    label: str  # nan, inf, -inf, zero, negative, huge, wrong type, unknown choice, empty, null, ...
    value: str  # as typed on the command line

    @property
    def id(self) -> str:
        return f"{self.leaf.key}={self.value} [{self.label}, {self.leaf.schema}]"

    def overrides(self, fill: dict[str, str]) -> list[str]:
        return [o.format(**fill) for o in (*self.leaf.selects, f"{self.leaf.key}={self.value}")]


# The context a registry entry's keys are tried in: the option, and what it needs to compose and
# validate as a user would give it (a dataset its models fit, a masks file, a model's target).
IMAGES = ("dataset=cifar10", f"dataset.root={DATA}")
CONTEXT = {
    ("dataset", "digits"): (),
    ("dataset", "imagenet"): ("dataset=imagenet", f"dataset.root={NOWHERE}", "model=resnet18"),
    ("model", "mlp"): ("model=mlp",),
    ("model", "lenet300"): ("model=lenet300",),
    ("model", "custom"): ("model=custom", "model.target=torchvision.models.resnet18", *IMAGES),
    ("method", "masks"): ("method=masks", "method.file={masks_file}"),
    ("method", "shuffled_masks"): ("method=shuffled_masks", "method.file={masks_file}"),
}
GROUPS = {"dataset": ("dataset", (f"dataset.root={DATA}", "model=convnet")), "model": ("model", IMAGES), "method": ("method", ()),
          "logger": ("logger", ()), "stop_rule": ("growth/stop", ())}
# Core sections walked from the root schema; the others are walked per registry entry.
PER_ENTRY = {"dataset", "model", "method", "logger"}
SKIPPED = {"defaults"}


def _unwrap(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return inner, True
    return tp, False


def _kind(tp: Any) -> tuple[str, str | None]:
    origin = typing.get_origin(tp)
    if origin in (list, typing.List):
        (item,) = typing.get_args(tp) or (Any,)
        return "list", _kind(item)[0]
    if origin in (dict, typing.Dict):
        return "dict", None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "enum", None
    if tp is bool:
        return "bool", None
    if tp is int:
        return "int", None
    if tp is float:
        return "float", None
    if tp is str:
        return "str", None
    return "any", None


STUDY_CONTEXT = ("study=compare", "study.seeds=[0]", "study.growth_methods=[pwmpr]", "study.baselines=[dense]",
                 "study.matched_methods=[phew]")


def _declared_by(schema: type, f: dataclasses.Field) -> type:
    """The topmost class of the schema's bases that holds this very field (an inherited field is
    one key, tried once; a subclass that redeclares it makes another)."""
    for base in reversed(schema.__mro__):
        if getattr(base, "__dataclass_fields__", {}).get(f.name) is f:
            return base
    return schema


def _walk(schema: type, prefix: str, selects: tuple[str, ...], skip: set[str] = frozenset(), seen: set | None = None) -> list[Leaf]:
    hints = typing.get_type_hints(schema)
    seen = set() if seen is None else seen
    out = []
    for f in dataclasses.fields(schema):
        if f.name in SKIPPED or f.name in skip:
            continue
        owner = (_declared_by(schema, f), f.name, prefix)
        if owner in seen:
            continue
        seen.add(owner)
        tp, nullable = _unwrap(hints[f.name])
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            # (a study's keys are checked when a study is asked for; a small one, since a dry run
            # composes and checks every run of it)
            inner = STUDY_CONTEXT if key == "study" else selects
            out += _walk(tp, key + ".", inner, skip={"stop"} if key == "growth" else set(), seen=seen)
            continue
        kind, item = _kind(tp)
        out.append(Leaf(key, owner[0].__name__, kind, item, nullable, bool(field_checks(f)), selects))
    return out


def leaves() -> list[Leaf]:
    """Every key of every schema: the core sections, then every registered entry's schema."""
    from growth import kinds  # noqa: F401  (creates the registries)
    from growth.config.schema import Config
    from growth.registry import load_all

    declared: set = set()
    found = _walk(Config, "", (), skip=PER_ENTRY, seen=declared)
    seen: set[type] = set()
    for kind, (group, context) in GROUPS.items():
        registry = load_all()[kind]
        section = registry.key.rpartition(".")[0]
        for entry in registry.entries():
            if entry.schema is None or entry.schema in seen:
                continue
            seen.add(entry.schema)
            selects = CONTEXT.get((kind, entry.name))
            if selects is None:
                selects = (f"{group}={entry.name}", *context)
            found += _walk(entry.schema, section + ".", selects, seen=declared)
    return found


def schema_keys() -> set[str]:
    """Every key of every schema, counted independently of the cases (by leaf id)."""
    return {leaf.id for leaf in leaves()}


HUGE_INT = "1000000000000000"

BAD_VALUES: dict[str, list[tuple[str, str]]] = {
    "float": [("nan", "nan"), ("inf", "inf"), ("-inf", "-inf"), ("zero", "0"), ("negative", "-1"), ("huge", "1e300")],
    "int": [("nan", "nan"), ("inf", "inf"), ("zero", "0"), ("negative", "-1"), ("huge", HUGE_INT), ("wrong type", "1.5")],
    "bool": [("wrong type", "maybe")],
    "str": [("unknown choice", "no_such_value"), ("empty", "''")],
    "enum": [("unknown choice", "no_such_value")],
    "dict": [("wrong type", "not_a_dict")],
    "any": [],
}
LIST_VALUES: dict[str | None, list[tuple[str, str]]] = {
    "float": [("empty", "[]"), ("wrong type", "[x]"), ("nan item", "[nan]"), ("inf item", "[inf]"), ("negative item", "[-1]"),
              ("wrong length", "[0.5,0.5,0.5,0.5,0.5]")],
    "int": [("empty", "[]"), ("wrong type", "[x]"), ("negative item", "[-1]"), ("huge item", f"[{HUGE_INT}]")],
    "str": [("empty", "[]"), ("unknown choice", "[no_such_value]"), ("wrong type", "not_a_list")],
}


def cases() -> list[Case]:
    out = []
    for leaf in leaves():
        values = list(LIST_VALUES.get(leaf.item, [("empty", "[]"), ("wrong type", "not_a_list")]) if leaf.kind == "list"
                      else BAD_VALUES[leaf.kind])
        if not leaf.nullable:
            values.append(("null", "null"))
        out += [Case(leaf, label, value) for label, value in values]
    return out
