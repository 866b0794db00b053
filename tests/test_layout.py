"""The package's architecture, read from the source (no module is imported): the import graph of
src/ead — every `import` and `from … import`, relative ones and those inside functions — has no
cycle, and each layer imports only the layers below it:

    base (errors, version, io, device, progress) → data → metrics | model → diffusion → pipeline → train
    → cli, with speed (`ead bench`'s measurements) and viz beside train, below cli.

Training sits above the model object (pipeline): a run exports EAD model folders and samples from
its EMA model to measure it; the model object never trains. Nothing imports the benchmarks.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ead"
BASE = {"ead.errors", "ead.version", "ead.io", "ead.device", "ead.progress"}


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = ("ead",) + path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def resolve(name: str) -> str | None:   # the module a dotted name lives in
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # `from pkg import sub` imports the submodule pkg.sub when there is one
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            deps |= {d for d in map(resolve, names) if d and d != mod}
            deps |= {"benchmarks" for n in names if n.split(".")[0] == "benchmarks"}
        graph[mod] = deps
    return graph


def layer(mod: str) -> str:
    if mod in BASE:
        return "base"
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "root"


# what each layer may import besides itself and the base (errors, version, io, device)
ALLOWED = {
    "base": set(),
    "data": set(),
    "metrics": {"data"},
    "model": {"data"},
    "diffusion": {"data", "model"},
    "pipeline": {"data", "model", "diffusion", "metrics"},
    "train": {"data", "model", "diffusion", "metrics", "pipeline"},
    "predictor": {"metrics", "model", "train"},   # the public names of the property predictor
    "speed": {"data", "model", "diffusion", "pipeline"},
    "viz": {"data", "metrics", "model", "diffusion", "pipeline"},
    "cli": {"data", "model", "diffusion", "metrics", "pipeline", "train", "predictor", "speed", "viz"},
    "__main__": {"cli"},
    "root": {"pipeline"},   # `import ead` exposes ead.EAD lazily; no module imports the root
}


def test_every_module_has_a_layer():
    assert {layer(m) for m in modules()} <= set(ALLOWED), sorted({layer(m) for m in modules()} - set(ALLOWED))


def test_no_import_cycle():
    graph = import_graph()
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], [0]

    def visit(v):   # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_each_layer_imports_only_the_layers_below_it():
    bad = []
    for mod, deps in import_graph().items():
        here = layer(mod)
        for dep in deps:
            there = "benchmarks" if dep == "benchmarks" else layer(dep)
            if there not in ("base", here) and there not in ALLOWED[here]:
                bad.append(f"{mod} ({here}) imports {dep} ({there})")
    assert not bad, "\n".join(sorted(bad))


def test_the_graph_sees_relative_and_function_level_imports():
    """The checker itself: a relative import inside a function is an edge."""
    graph = import_graph()
    assert "ead.data.batch" in graph["ead.diffusion.noise"]          # from ..data.batch import …
    assert "ead.pipeline" in graph["ead"]                            # inside __getattr__
    assert "ead.cli.sample" in graph["ead.cli"]                      # from . import sample
