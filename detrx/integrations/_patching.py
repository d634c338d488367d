"""Replace module globals that are a given object, and put the originals back exactly.

A library that defines a function in one module and imports it into others holds one reference per
module (``from a import f`` binds ``b.f``). Patching the library means rebinding every one of those
names, and unpatching means rebinding exactly those names to exactly the original objects.

    patcher = GlobalsPatcher()
    patcher.replace(loaded_modules("rfdetr"), original_fn, detrx_fn)   # -> ["rfdetr.a.fn", ...]
    ...
    patcher.restore()
"""
import sys
from types import ModuleType
from typing import Any, Iterable


def loaded_modules(package: str) -> list[ModuleType]:
    """The already imported modules ``package`` and ``package.*`` (nothing is imported here)."""
    prefix = package + "."
    return [module for name, module in list(sys.modules.items())
            if isinstance(module, ModuleType) and (name == package or name.startswith(prefix))]


def find_references(namespaces: Iterable[Any], target: object) -> list[tuple[Any, str]]:
    """Every ``(namespace, name)`` whose value ``is`` ``target``; namespaces are modules or classes."""
    found = []
    for namespace in namespaces:
        for name, value in list(vars(namespace).items()):
            if value is target:
                found.append((namespace, name))
    return found


def _site_name(namespace: Any, name: str) -> str:
    """``module.name`` or ``module.Class.name``, for reports."""
    if isinstance(namespace, ModuleType):
        return f"{namespace.__name__}.{name}"
    return f"{namespace.__module__}.{namespace.__qualname__}.{name}"  # a class


class GlobalsPatcher:
    """Rebinds names that hold an original object to a replacement, remembering each rebinding.

    ``replace`` may be called again (for modules imported since, or for other targets): names that
    already hold the replacement are not found again, so repeated calls are harmless. ``restore``
    puts back the original object under every recorded name that still holds the replacement (a
    name rebound by someone else since is left alone) and forgets the records.
    """

    def __init__(self) -> None:
        # (namespace, name, original, replacement), in the order they were replaced
        self._records: list[tuple[Any, str, object, object]] = []

    def replace(self, namespaces: Iterable[Any], original: object, replacement: object) -> list[str]:
        """Rebind every name in ``namespaces`` that ``is`` ``original``; returns the new sites' names."""
        if original is replacement:
            raise ValueError("replace: `replacement` must be a different object from `original`")
        new_sites = []
        for namespace, name in find_references(namespaces, original):
            setattr(namespace, name, replacement)
            self._records.append((namespace, name, original, replacement))
            new_sites.append(_site_name(namespace, name))
        return new_sites

    def restore(self) -> list[str]:
        """Put every original back (newest first); returns the restored sites' names."""
        restored = []
        for namespace, name, original, replacement in reversed(self._records):
            if vars(namespace).get(name) is replacement:
                setattr(namespace, name, original)
                restored.append(_site_name(namespace, name))
        self._records.clear()
        return restored

    def sites(self) -> list[str]:
        """Names of the currently replaced sites, in the order they were replaced."""
        return [_site_name(namespace, name) for namespace, name, _, _ in self._records]

    def __bool__(self) -> bool:
        return bool(self._records)
