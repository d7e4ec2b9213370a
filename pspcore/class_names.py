"""Names for classes a model does not name: class_0, class_1, ... (reports, label files, psp-eval tables)."""
from __future__ import annotations

from collections.abc import Sequence


def generic_class_name(index: int) -> str:
    return f"class_{index}"


def class_names_for(num_classes: int, names: Sequence[str] = ()) -> tuple[str, ...]:
    """`names` for the classes they cover, generic names for the rest of `num_classes`."""
    return tuple(names[i] if i < len(names) else generic_class_name(i) for i in range(max(num_classes, len(names))))
