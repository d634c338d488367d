"""The module-global patcher shared by the integrations: find, replace, restore exactly."""
import sys
import types

import pytest

from detrx.integrations._patching import GlobalsPatcher, find_references, loaded_modules


def _original(x):
    return x


def _replacement(x):
    return -x


@pytest.fixture
def fake_package():
    """A package `fakepkg` with a defining module, an importing module and an unrelated one."""
    names = ["fakepkg", "fakepkg.core", "fakepkg.user", "fakepkg_other"]
    modules = {name: types.ModuleType(name) for name in names}
    modules["fakepkg.core"].fn = _original
    modules["fakepkg.user"].fn = _original
    modules["fakepkg.user"].alias = _original
    modules["fakepkg_other"].fn = _original
    sys.modules.update(modules)
    yield modules
    for name in names:
        sys.modules.pop(name, None)


def test_loaded_modules_takes_the_package_and_its_submodules_only(fake_package):
    found = {module.__name__ for module in loaded_modules("fakepkg")}
    assert found == {"fakepkg", "fakepkg.core", "fakepkg.user"}


def test_find_references_uses_identity(fake_package):
    fake_package["fakepkg.user"].copy = lambda x: x
    refs = find_references(loaded_modules("fakepkg"), _original)
    assert sorted((ns.__name__, name) for ns, name in refs) == [
        ("fakepkg.core", "fn"), ("fakepkg.user", "alias"), ("fakepkg.user", "fn")]


def test_replace_then_restore_is_exact_and_repeat_is_harmless(fake_package):
    patcher = GlobalsPatcher()
    sites = patcher.replace(loaded_modules("fakepkg"), _original, _replacement)
    assert sorted(sites) == ["fakepkg.core.fn", "fakepkg.user.alias", "fakepkg.user.fn"]
    assert fake_package["fakepkg.user"].alias is _replacement
    assert fake_package["fakepkg_other"].fn is _original
    assert patcher.replace(loaded_modules("fakepkg"), _original, _replacement) == []
    assert sorted(patcher.sites()) == sorted(sites)
    assert sorted(patcher.restore()) == sorted(sites)
    for name in ("fakepkg.core", "fakepkg.user"):
        assert fake_package[name].fn is _original
    assert fake_package["fakepkg.user"].alias is _original
    assert not patcher and patcher.sites() == [] and patcher.restore() == []


def test_restore_leaves_names_rebound_by_someone_else(fake_package):
    patcher = GlobalsPatcher()
    patcher.replace(loaded_modules("fakepkg"), _original, _replacement)
    third = lambda x: x  # noqa: E731
    fake_package["fakepkg.core"].fn = third
    patcher.restore()
    assert fake_package["fakepkg.core"].fn is third
    assert fake_package["fakepkg.user"].fn is _original


def test_class_attributes_are_patched_too():
    class Holder:
        method = _original

    patcher = GlobalsPatcher()
    assert patcher.replace([Holder], _original, _replacement) == [f"{__name__}.{Holder.__qualname__}.method"]
    assert Holder.method is _replacement
    patcher.restore()
    assert Holder.method is _original


def test_replacing_an_object_by_itself_is_refused():
    with pytest.raises(ValueError, match=r"^replace: `replacement` must be a different object from `original`$"):
        GlobalsPatcher().replace([], _original, _original)
