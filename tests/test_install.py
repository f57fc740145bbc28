"""The install holds what the package uses: setup.py's requirements against the imports found in
the package's own source (not a hand list), pins against what they say, and the core importing
with every optional package missing."""

import ast
import importlib.metadata as md
import pathlib
import re
import subprocess
import sys

from packaging.requirements import Requirement
from packaging.version import Version

REPO = pathlib.Path(__file__).resolve().parents[1]


def _setup_constants() -> dict:
    """INSTALL_REQUIRES, RUNTIME_ONLY, OPTIONAL_IMPORTS, EXTRAS as setup.py writes them (literals)."""
    out = {}
    for node in ast.parse((REPO / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _third_party_imports() -> dict[str, set[str]]:
    """{top-level module: files importing it} over memr1_jax/, the standard library left out."""
    found: dict[str, set[str]] = {}
    for f in (REPO / "memr1_jax").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                if top not in sys.stdlib_module_names and top != "memr1_jax":
                    found.setdefault(top, set()).add(str(f.relative_to(REPO)))
    return found


def test_install_requires_equals_what_the_package_imports():
    c = _setup_constants()
    required = {_norm(Requirement(r).name) for r in c["INSTALL_REQUIRES"]}
    extras = {k: {_norm(Requirement(r).name) for r in v} for k, v in c["EXTRAS"].items()}
    dists = md.packages_distributions()
    imported, problems = set(), []
    for module, files in sorted(_third_party_imports().items()):
        names = {_norm(d) for d in dists.get(module, [])}
        where = ", ".join(sorted(files)[:2])
        if module in c["OPTIONAL_IMPORTS"]:
            extra = c["OPTIONAL_IMPORTS"][module]
            if extra is not None and not names & extras.get(extra, set()):
                problems.append(f"{module} ({where}): optional, but extra {extra!r} does not install it")
            continue
        if not names:
            problems.append(f"{module} ({where}): imported, not installed by any distribution")
        elif not names & required:
            problems.append(f"{module} ({where}): imported, but {sorted(names)} is not in INSTALL_REQUIRES")
        imported |= names
    for name in sorted(required - imported - {_norm(n) for n in c["RUNTIME_ONLY"]}):
        problems.append(f"{name}: in INSTALL_REQUIRES, imported nowhere in memr1_jax/ and not in RUNTIME_ONLY")
    assert not problems, "\n".join(problems)


def test_installed_versions_satisfy_every_pin():
    c = _setup_constants()
    bad = []
    for r in map(Requirement, c["INSTALL_REQUIRES"]):
        have = md.version(r.name)
        if not r.specifier.contains(have, prereleases=True):
            bad.append(f"{r}: installed {have}")
    assert not bad, bad


def test_the_protobuf_pin_is_what_sentencepieces_generated_code_demands():
    # The pin's comment says why it exists; the number must be the gencode's own.
    import sentencepiece
    pb2 = pathlib.Path(sentencepiece.__file__).parent / "sentencepiece_model_pb2.py"
    m = re.search(r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),",
                  pb2.read_text())
    assert m, f"{pb2}: no runtime version check found"
    gencode = Version(".".join(m.groups()))
    pin = next(Requirement(r) for r in _setup_constants()["INSTALL_REQUIRES"] if Requirement(r).name == "protobuf")
    lows = [Version(s.version) for s in pin.specifier if s.operator == ">="]
    assert lows == [gencode], f"setup.py pins {pin}; sentencepiece's generated code needs protobuf >= {gencode}"
    assert Version(f"{gencode.major}.999") in pin.specifier and Version(f"{gencode.major + 1}.0") not in pin.specifier


def test_the_core_imports_with_every_optional_package_missing():
    optional = sorted(_setup_constants()["OPTIONAL_IMPORTS"])
    code = ("import sys\n"
            f"for m in {optional!r}: sys.modules[m] = None   # import m -> ImportError\n"
            "import memr1_jax, memr1_jax.train, memr1_jax.evaluate, memr1_jax.serve, memr1_jax.pipeline\n"
            "from memr1_jax import Memory\n"
            "from memr1_jax.rl.metrics_writer import MetricsWriter\n"
            "print('ok')\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr[-3000:]
