"""The folder rules hold and no module imports itself back through others (lazy imports inside functions count)."""

import grimp

PACKAGES = ("streamrec", "jobs", "serving", "model_export", "infra", "bench")


def test_no_module_is_part_of_an_import_cycle() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module) - {module}):
            chain = graph.find_shortest_chain(importer=imported, imported=module, as_packages=False)
            if chain:
                cycles.append(" -> ".join((module, *chain)))
    assert cycles == []


def test_the_cycle_check_sees_lazy_imports(tmp_path, monkeypatch) -> None:
    """A cycle made only of imports inside functions is still found (the check can fail)."""
    pkg = tmp_path / "cyclepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from cyclepkg import b\n")
    (pkg / "b.py").write_text("from cyclepkg import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cyclepkg", cache_dir=None)
    assert graph.find_shortest_chain(importer="cyclepkg.b", imported="cyclepkg.a") == ("cyclepkg.b", "cyclepkg.a")
    assert graph.find_shortest_chain(importer="cyclepkg.a", imported="cyclepkg.b") == ("cyclepkg.a", "cyclepkg.b")
