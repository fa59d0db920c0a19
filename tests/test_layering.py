"""The package's layers import only downward.

base helpers -> ops -> data -> models -> train -> export/predict -> commands; every import of an
`avfbp_jax` module counts, including those inside functions (a lazy import is still a
dependency). Within a layer, modules may import each other.
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
    {"cli", "launch", "fer_convert", "fer_cli", "prepare_cli", "alexnet_convert", "mtcnn_convert",
     "__init__"},
]


def layer_of(module: str) -> int:
    """The layer of `avfbp_jax.X...` (by its first component X)."""
    top = module.split(".")[1] if "." in module else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: not in any layer of tests/test_layering.py (add it)")


def imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, module) of every avfbp_jax module that the file imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("avfbp_jax")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "avfbp_jax":
                found += [(node.lineno, f"avfbp_jax.{a.name}") for a in node.names]
            elif node.module.startswith("avfbp_jax."):
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
