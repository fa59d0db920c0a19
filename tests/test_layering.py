"""The package's layers import only downward, commands live in their own room, no import circles.

base helpers -> ops -> data -> models -> train -> export/predict -> commands; every import of an
`avfbp_jax` module counts, including those inside functions (a lazy import is still a
dependency). Within a layer, modules may import each other, but never in a circle.
"""

import ast
import pathlib

import avfbp_jax

PACKAGE = pathlib.Path(avfbp_jax.__file__).parent
LAYERS = [
    {"atomic", "progress", "trees", "interrupt", "weights", "pinned_wheel", "version"},
    {"ops"},
    {"data"},
    {"models"},
    {"train"},
    {"export", "predict"},
    {"commands", "__init__"},
]
COMMANDS = PACKAGE / "commands"


def layer_of(module: str) -> int:
    """The layer of `avfbp_jax.X...` (by its first component X)."""
    top = module.split(".")[1] if "." in module else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: not in any layer of tests/test_layering.py (add it)")


def imports(path: pathlib.Path, *, everything: bool = False, names: bool = False
            ) -> list[tuple[int, str]]:
    """(line, module) of every avfbp_jax module that the file imports (every module at all with
    `everything`; with `names`, `from M import N` gives M.N, which may name a module)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names
                      if everything or a.name.startswith("avfbp_jax")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            ours = node.module == "avfbp_jax" or node.module.startswith("avfbp_jax.")
            if node.module == "avfbp_jax" or (names and ours):
                found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
            elif ours or everything:
                found.append((node.lineno, node.module))
    return found


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)


def test_every_module_is_in_a_layer_and_imports_only_downward():
    upward = []
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    for path in files:
        source = module_name(path)
        here = layer_of(source)
        for line, target in imports(path):
            if layer_of(target) > here:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not upward, "imports running upward:\n" + "\n".join(upward)


def test_commands_live_in_their_room():
    # A command module parses a command line; outside avfbp_jax/commands/ nothing does.
    stray = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if COMMANDS in path.parents:
            continue
        for line, target in imports(path, everything=True):
            if target == "argparse":
                stray.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports argparse")
    assert not stray, "command-line parsing outside avfbp_jax/commands/:\n" + "\n".join(stray)
    assert {p.stem for p in COMMANDS.glob("*.py")} >= {
        "cli", "synth", "prepare", "train", "evaluate", "export", "predict", "faces", "launch",
        "fer_convert", "mtcnn_convert", "alexnet_convert"}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (`from avfbp_jax.ops import fbp` counts as
    avfbp_jax.ops.fbp when that is a module, else as the package avfbp_jax.ops)."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        source = module_name(path)
        graph[source] = set()
        for _, target in imports(path, names=True):
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != source:
                graph[source].add(target)
    return graph


def test_no_import_circles():
    assert not cycles(import_graph()), cycles(import_graph())


def test_the_circle_finder_finds_circles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_data_imports_no_model_code():
    for path in sorted((PACKAGE / "data").rglob("*.py")):
        bad = [t for _, t in imports(path) if t.startswith(("avfbp_jax.models", "avfbp_jax.train"))]
        assert not bad, f"{path}: {bad}"


def test_the_checker_sees_lazy_and_upward_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from avfbp_jax.train import loop\n"
                     "from avfbp_jax import atomic\nimport avfbp_jax.models.fer\n")
    assert sorted(t for _, t in imports(probe)) == [
        "avfbp_jax.atomic", "avfbp_jax.models.fer", "avfbp_jax.train"]
    assert layer_of("avfbp_jax.train.loop") > layer_of("avfbp_jax.data.prepare")
