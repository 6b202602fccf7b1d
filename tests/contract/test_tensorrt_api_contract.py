"""Contract test: every TensorRT name wcx uses exists in the real TensorRT 10.3 and 11.4 bindings.

TensorRT cannot be installed here (no GPU, and the ``tensorrt`` wheels are stubs that download
from NVIDIA's own index), but the Python *bindings* wheels are real PyPI files:
``tensorrt-cu12-bindings==10.3.*`` (the JetPack 6 release, the oldest wcx supports) and
``tensorrt-cu13-bindings==11.4.*``. Their ``tensorrt_bindings/tensorrt.so`` cannot be imported
without ``libnvinfer``, but its string table holds, NUL-terminated, every class, method, property,
enum value and keyword-argument name that pybind11 registers. The linker merges suffixes
(``INT8`` is stored inside ``UINT8``), so a name counts as present when ``name + b"\\0"`` occurs
anywhere in the file; names only found as such a suffix are listed in the report.

What wcx uses is derived from its source with ``ast`` (``tensorrt_api_uses``): every attribute
chain rooted at the ``tensorrt`` module or at a value computed from it (``builder =
trt.Builder(...)``, ``engine = runtime.deserialize_cuda_engine(...)``, ``self._context =
context``, parameters that receive such values within one module, tuple assignments,
``getattr(trt, "name")``), and keyword names passed to calls on them. A documented minimum list
(``MUST_BE_FOUND``) guards the analysis itself: if a refactor hides a call from it, the test
fails instead of silently checking less.

Signatures (no wheel needed): the parameter names of each TensorRT method wcx calls, as
TensorRT's pybind11 source registers them (``PYBIND_SIGNATURES``), must be the fake's, and
every call in wcx must pass them validly (positions, keyword names, required ones).

Also checked: names removed in TensorRT 11 are not used anywhere in wcx (``EXPLICIT_BATCH``,
``BuilderFlag`` (``FP16``/``INT8`` flags), ``IInt8EntropyCalibrator2`` and the other INT8
calibrators, ``execute_async_v2``), and the premise that 11.4 indeed lacks them.

The two tests that read the wheels are marked ``network``: the wheels (about 1.2 MB each) are
fetched once with ``pip download --no-deps`` into pytest's cache
(``.pytest_cache/d/tensorrt-bindings``) and reused; without the registry they are skipped with
the reason.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WCX = ROOT / "wcx"

#: (requirement, what it stands for). Pinned to the two ends wcx supports.
BINDINGS = {
    "10.3": "tensorrt-cu12-bindings==10.3.*",
    "11.4": "tensorrt-cu13-bindings==11.4.*",
}
#: The wheels exist for CPython 3.8-3.13 on manylinux x86_64; pin the tags so that the same
#: files are fetched whatever Python runs the tests.
WHEEL_TAGS = ["--python-version", "3.11", "--platform", "manylinux_2_28_x86_64",
              "--platform", "manylinux_2_17_x86_64", "--only-binary=:all:"]

#: Names the analysis must find in wcx's TensorRT code (guards the AST walk, see module doc).
MUST_BE_FOUND = {
    "ILogger", "log", "Severity", "Builder", "NetworkDefinitionCreationFlag", "STRONGLY_TYPED", "OnnxParser",
    "parse", "num_errors", "get_error", "create_network", "create_builder_config",
    "create_optimization_profile", "set_shape", "add_optimization_profile", "set_memory_pool_limit",
    "MemoryPoolType", "WORKSPACE", "create_timing_cache", "set_timing_cache", "ignore_mismatch",
    "serialize", "build_serialized_network", "Runtime", "deserialize_cuda_engine",
    "create_execution_context", "num_io_tensors", "get_tensor_name", "get_tensor_mode", "TensorIOMode",
    "INPUT", "get_tensor_dtype", "DataType", "FLOAT", "HALF", "get_tensor_profile_shape",
    "set_input_shape", "set_tensor_address", "execute_async_v3",
}
#: Removed in TensorRT 11 (or long deprecated): wcx must not use them anywhere.
REMOVED_IN_11 = {"EXPLICIT_BATCH", "BuilderFlag", "IInt8EntropyCalibrator2", "IInt8Calibrator",
                 "IInt8MinMaxCalibrator", "IInt8LegacyCalibrator", "IInt8EntropyCalibrator",
                 "int8_calibrator", "execute_async_v2", "execute_async", "platform_has_fast_fp16",
                 "platform_has_fast_int8", "build_engine", "max_workspace_size"}
#: The premise: these are gone from the 11.4 string table (INT8 is not listed: ``UINT8`` and
#: ``DataType.INT8`` keep the string alive).
ABSENT_IN_11_4 = {"EXPLICIT_BATCH", "FP16", "IInt8EntropyCalibrator2", "execute_async_v2"}


# -------------------------------------------------------------------------------------------
# what wcx uses (AST)
# -------------------------------------------------------------------------------------------
def _key(node: ast.AST) -> str | None:
    """``x`` for a Name, ``self.x`` for an attribute of ``self``; otherwise None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return f"self.{node.attr}"
    return None


def _root(node: ast.AST) -> ast.AST:
    """The innermost object of an attribute/call/subscript chain (``a`` in ``a.b(c)[0].d``)."""
    while True:
        if isinstance(node, ast.Attribute):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Subscript):
            node = node.value
        else:
            return node


def _is_tensorrt_import(value: ast.AST) -> bool:
    """``import_tensorrt(...)`` or ``importlib.import_module("tensorrt")``."""
    if not isinstance(value, ast.Call):
        return False
    func = value.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    if name == "import_tensorrt":
        return True
    return name == "import_module" and bool(value.args) and isinstance(value.args[0], ast.Constant) \
        and value.args[0].value == "tensorrt"


class _ModuleAnalysis:
    """Which names hold TensorRT values in one module, and which TensorRT names it uses."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        defs = (ast.FunctionDef, ast.AsyncFunctionDef)
        self.functions = {n.name: n for n in ast.walk(tree) if isinstance(n, defs)}
        self.tainted: dict[str, set[str]] = {name: set() for name in self.functions}  # per function
        self.attrs: set[str] = {"self._trt"}  # instance attributes holding TensorRT values

    def _fn_of(self) -> dict[int, str]:
        owner = {}
        for name, fn in self.functions.items():
            for node in ast.walk(fn):
                owner.setdefault(id(node), name)
        # innermost function wins: walk again with nested functions overriding
        for fn in self.functions.values():
            for inner in ast.walk(fn):
                if inner is not fn and isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    for node in ast.walk(inner):
                        owner[id(node)] = inner.name
        return owner

    def _is_tainted(self, node: ast.AST, fn: str) -> bool:
        root = _root(node)
        key = _key(root) if not isinstance(root, ast.Attribute) else None
        if isinstance(root, ast.Name) and (root.id in self.tainted.get(fn, set()) or root.id == "trt"):
            return True
        # self.x.y(...): the chain's first link decides
        node2 = node
        while isinstance(node2, (ast.Attribute, ast.Call, ast.Subscript)):
            k = _key(node2)
            if k in self.attrs:
                return True
            node2 = node2.func if isinstance(node2, ast.Call) else node2.value
        return key in self.attrs if key else False

    def run(self) -> None:
        owner = self._fn_of()
        for name, fn in self.functions.items():
            for arg in fn.args.args + fn.args.kwonlyargs:
                if arg.arg == "trt":
                    self.tainted[name].add("trt")
        changed = True
        while changed:
            changed = False
            for node in ast.walk(self.tree):
                fn = owner.get(id(node), "")
                if isinstance(node, ast.Assign):
                    pairs: list[tuple[ast.AST, ast.AST]] = []
                    for target in node.targets:
                        if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                            pairs += list(zip(target.elts, node.value.elts, strict=False))
                        else:
                            pairs.append((target, node.value))
                    for target, value in pairs:
                        if _is_tensorrt_import(value) or self._is_tainted(value, fn):
                            changed |= self._taint(target, fn)
                elif isinstance(node, (ast.For, ast.comprehension)) and self._is_tainted(node.iter, fn):
                    changed |= self._taint(node.target, fn)
                elif isinstance(node, ast.Call) and self._callee(node) is not None:
                    callee = self.functions[self._callee(node) or ""]
                    params = [a.arg for a in callee.args.args]
                    if isinstance(node.func, ast.Attribute):  # self.method(...): skip ``self``
                        params = params[1:]
                    for param, arg in zip(params, node.args, strict=False):
                        if self._is_tainted(arg, fn) and param not in self.tainted[callee.name]:
                            self.tainted[callee.name].add(param)
                            changed = True
                    for kw in node.keywords:
                        param = kw.arg
                        known = self.tainted[callee.name]
                        if param and self._is_tainted(kw.value, fn) and param not in known:
                            known.add(param)
                            changed = True

    def _callee(self, node: ast.Call) -> str | None:
        """The name of the function of this module a call calls (``f(...)`` or ``self.f(...)``)."""
        func = node.func
        if isinstance(func, ast.Name) and func.id in self.functions:
            return func.id
        if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self"
                and func.attr in self.functions):
            return func.attr
        return None

    def _taint(self, target: ast.AST, fn: str) -> bool:
        key = _key(target)
        if key is None:
            return False
        if key.startswith("self."):
            if key in self.attrs:
                return False
            self.attrs.add(key)
            return True
        if key in self.tainted.setdefault(fn, set()):
            return False
        self.tainted[fn].add(key)
        return True

    def uses(self) -> dict[str, set[str]]:
        """TensorRT names used -> the source expressions that use them."""
        owner = self._fn_of()
        found: dict[str, set[str]] = {}
        for node in ast.walk(self.tree):
            fn = owner.get(id(node), "")
            if isinstance(node, ast.ClassDef) and any(self._is_tainted(b, fn) for b in node.bases):
                # A subclass of a TensorRT class (the ILogger trampoline): its overrides must
                # carry TensorRT's method names.
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and not item.name.startswith("__"):
                        found.setdefault(item.name, set()).add(f"class {node.name}: def {item.name}")
            if isinstance(node, ast.Attribute) and self._is_tainted(node.value, fn):
                if _key(node) in self.attrs:  # self._engine itself is wcx's attribute
                    continue
                if not (node.attr.startswith("__") and node.attr != "__version__"):
                    found.setdefault(node.attr, set()).add(ast.unparse(node))
            elif isinstance(node, ast.Call):
                if (isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) >= 2
                        and isinstance(node.args[1], ast.Constant) and self._is_tainted(node.args[0], fn)):
                    found.setdefault(node.args[1].value, set()).add(ast.unparse(node))
                if isinstance(node.func, ast.Attribute) and self._is_tainted(node.func, fn):
                    for kw in node.keywords:
                        if kw.arg:
                            found.setdefault(kw.arg, set()).add(f"{ast.unparse(node.func)}({kw.arg}=...)")
        return found


def tensorrt_api_uses(paths: list[Path]) -> dict[str, set[str]]:
    """Every TensorRT name used in ``paths`` (``.py`` files), mapped to where."""
    found: dict[str, set[str]] = {}
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        analysis = _ModuleAnalysis(tree)
        analysis.run()
        for name, where in analysis.uses().items():
            found.setdefault(name, set()).update(f"{path.relative_to(ROOT)}: {w}" for w in where)
    return found


def _wcx_sources() -> list[Path]:
    return sorted(WCX.rglob("*.py"))


def _modules_importing_tensorrt() -> list[Path]:
    return [p for p in _wcx_sources() if re.search(r"import_tensorrt|[\"']tensorrt[\"']|import tensorrt",
                                                   p.read_text())]


# -------------------------------------------------------------------------------------------
# the bindings' string tables
# -------------------------------------------------------------------------------------------
_OFFLINE_HINTS = ("NewConnectionError", "Failed to establish", "Temporary failure in name resolution",
                  "Network is unreachable", "ConnectTimeout", "ReadTimeout", "timed out", "ProxyError",
                  "Connection refused", "No route to host")


def _fetch_wheel(requirement: str, cache: Path) -> Path:
    package, version = requirement.split("==")
    stem = package.replace("-", "_")
    pattern = f"{stem}-{version.replace('*', '')}*.whl"
    cached = sorted(cache.glob(pattern))
    if cached:
        return cached[-1]
    res = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
         "--timeout", "20", "--retries", "1", "--dest", str(cache), *WHEEL_TAGS, requirement],
        capture_output=True, text=True, timeout=300,
    )
    cached = sorted(cache.glob(pattern))
    if res.returncode != 0 or not cached:
        text = res.stderr + res.stdout
        last = (text.strip().splitlines() or ["(no output)"])[-1]
        if any(hint in text for hint in _OFFLINE_HINTS):
            pytest.skip(f"the package registry is unreachable, cannot fetch {requirement}: {last}")
        pytest.fail(f"pip download {requirement} failed: {last}")
    return cached[-1]


def _bindings_files(wheel: Path) -> tuple[bytes, str]:
    """The bytes of ``tensorrt_bindings/tensorrt*.so`` and the text of its ``__init__.py``."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        so = [n for n in names if re.fullmatch(r"tensorrt_bindings/tensorrt(\.[^/]*)?\.so", n)]
        init = [n for n in names if n == "tensorrt_bindings/__init__.py"]
        assert so and init, f"{wheel.name}: no tensorrt_bindings/tensorrt.so or __init__.py in {names}"
        return zf.read(so[0]), zf.read(init[0]).decode("utf-8")


@pytest.fixture(scope="module")
def bindings(request: pytest.FixtureRequest) -> dict[str, tuple[str, bytes, str]]:
    """version -> (wheel file name, tensorrt.so bytes, __init__.py text)."""
    cache = Path(request.config.cache.mkdir("tensorrt-bindings"))
    out = {}
    for version, requirement in BINDINGS.items():
        wheel = _fetch_wheel(requirement, cache)
        so, init = _bindings_files(wheel)
        out[version] = (wheel.name, so, init)
    return out


def _presence(name: str, so: bytes, init: str) -> str:
    """'standalone', 'suffix' (only inside a longer string: merged suffix), 'python' (defined in
    ``__init__.py``) or 'missing'."""
    needle = name.encode() + b"\0"
    standalone = False
    start = 0
    found = False
    while (pos := so.find(needle, start)) != -1:
        found = True
        before = so[pos - 1:pos]
        if not (before.isalnum() or before == b"_"):
            standalone = True
            break
        start = pos + 1
    if found:
        return "standalone" if standalone else "suffix"
    if re.search(rf"^\s*{re.escape(name)}\s*=|^def {re.escape(name)}\b|\.{re.escape(name)} = ", init, re.M):
        return "python"
    return "missing"


# -------------------------------------------------------------------------------------------
# the tests
# -------------------------------------------------------------------------------------------
def test_analysis_finds_wcx_tensorrt_calls() -> None:
    used = tensorrt_api_uses(_modules_importing_tensorrt())
    missing = MUST_BE_FOUND - set(used)
    assert not missing, f"the AST analysis no longer sees {sorted(missing)} (update it or MUST_BE_FOUND)"


@pytest.mark.network
def test_every_tensorrt_name_wcx_uses_exists_in_10_3_and_11_4(bindings, record_property) -> None:
    modules = _modules_importing_tensorrt()
    used = tensorrt_api_uses(modules)
    report = [f"modules analysed: {', '.join(str(p.relative_to(ROOT)) for p in modules)}"]
    problems = []
    for version, (wheel, so, init) in bindings.items():
        presence = {name: _presence(name, so, init) for name in sorted(used)}
        absent = [n for n, p in presence.items() if p == "missing"]
        suffix_only = [n for n, p in presence.items() if p == "suffix"]
        python = [n for n, p in presence.items() if p == "python"]
        report.append(f"{wheel}: {len(used)} names checked; only as merged suffix: {suffix_only}; "
                      f"defined in __init__.py: {python}; missing: {absent}")
        problems += [f"TensorRT {version} ({wheel}) has no {name!r}, used at {sorted(used[name])}"
                     for name in absent]
    report.append(f"names: {sorted(used)}")
    record_property("tensorrt_contract", "\n".join(report))
    print("\n".join(report))
    assert not problems, "\n".join(problems)


def test_wcx_uses_no_name_removed_in_tensorrt_11() -> None:
    hits = []
    for path in _wcx_sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            name = (node.attr if isinstance(node, ast.Attribute)
                    else node.id if isinstance(node, ast.Name) else None)
            if name in REMOVED_IN_11:
                hits.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value in REMOVED_IN_11):
                hits.append(f"{path.relative_to(ROOT)}:{node.lineno}: getattr(..., {node.args[1].value!r})")
    # FP16/INT8 builder flags can only be reached through BuilderFlag (caught above) or set_flag.
    used = tensorrt_api_uses(_modules_importing_tensorrt())
    hits += [f"{w}" for name in ("set_flag", "FP16", "INT8") for w in sorted(used.get(name, ()))]
    assert not hits, "wcx uses TensorRT names removed in 11:\n" + "\n".join(hits)


@pytest.mark.network
def test_premise_11_4_lacks_the_removed_names(bindings) -> None:
    wheel, so, init = bindings["11.4"]
    still_there = [n for n in sorted(ABSENT_IN_11_4) if _presence(n, so, init) != "missing"]
    assert not still_there, f"{wheel} still has {still_there}: the contract's premise changed"
    wheel10, so10, init10 = bindings["10.3"]
    assert _presence("EXPLICIT_BATCH", so10, init10) == "standalone", wheel10
    assert _presence("STRONGLY_TYPED", so10, init10) == "standalone", wheel10
    assert _presence("__version__", so10, init10) != "missing"


# -------------------------------------------------------------------------------------------
# signatures: the fake and wcx's calls against TensorRT's pybind11 registrations
# -------------------------------------------------------------------------------------------
#: Parameter names of the methods wcx calls, as TensorRT's Python bindings register them
#: (``.def("name", ..., "arg"_a, ...)`` in NVIDIA/TensorRT ``python/src/infer/pyCore.cpp`` and
#: ``python/src/parsers/pyOnnx.cpp``, release 11.0, commit a892d222; unchanged since 10.3 for
#: these methods), with how many of them are required (the rest have defaults).
PYBIND_SIGNATURES: dict[str, tuple[tuple[str, ...], int]] = {
    "create_network": (("flags",), 0),
    "create_builder_config": ((), 0),
    "create_optimization_profile": ((), 0),
    "build_serialized_network": (("network", "config"), 2),
    "set_memory_pool_limit": (("pool", "pool_size"), 2),
    "add_optimization_profile": (("profile",), 1),
    "create_timing_cache": (("serialized_timing_cache",), 1),
    "set_timing_cache": (("cache", "ignore_mismatch"), 2),
    "set_shape": (("input", "min", "opt", "max"), 4),
    "parse": (("model", "path"), 1),
    "get_error": (("index",), 1),
    "deserialize_cuda_engine": (("serialized_engine",), 1),
    "create_execution_context": ((), 0),
    "get_tensor_name": (("index",), 1),
    "get_tensor_mode": (("name",), 1),
    "get_tensor_dtype": (("name",), 1),
    "get_tensor_shape": (("name",), 1),
    "get_tensor_profile_shape": (("name", "profile_index"), 2),
    "set_input_shape": (("name", "shape"), 2),
    "set_tensor_address": (("name", "memory"), 2),
    "execute_async_v3": (("stream_handle",), 1),
}
#: the modules that call TensorRT
TENSORRT_CALLERS = (WCX / "export" / "tensorrt_engine.py", WCX / "runtime" / "tensorrt_runner.py")


def _fake_signatures() -> dict[str, tuple[tuple[str, ...], int]]:
    """``{method: (parameter names, number required)}`` of the methods of the classes that
    ``make_fake_tensorrt`` defines (read from its source: most are local classes)."""
    tree = ast.parse((ROOT / "tests" / "fakes" / "tensorrt.py").read_text(encoding="utf-8"))
    factory = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "make_fake_tensorrt")
    out: dict[str, tuple[tuple[str, ...], int]] = {}
    for cls in (n for n in ast.walk(factory) if isinstance(n, ast.ClassDef)):
        for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in PYBIND_SIGNATURES):
            params = [a.arg for a in fn.args.posonlyargs + fn.args.args][1:]  # without self
            assert fn.name not in out, f"two fake classes define {fn.name}"
            out[fn.name] = (tuple(params), len(params) - len(fn.args.defaults))
    return out


def test_the_fake_has_tensorrt_s_parameter_names() -> None:
    """A call that works on the fake, by keywords or by position, works on TensorRT."""
    fake = _fake_signatures()
    missing = sorted(set(PYBIND_SIGNATURES) - set(fake))
    assert not missing, f"the fake lacks {missing}"
    for name, expected in PYBIND_SIGNATURES.items():
        assert fake[name] == expected, f"fake {name}: {fake[name]}, TensorRT registers {expected}"


def test_wcx_calls_tensorrt_methods_with_their_registered_arguments() -> None:
    """Every call wcx makes to one of these methods passes an allowed number of positional
    arguments, only registered keyword names, and every required parameter."""
    checked: list[str] = []
    for path in TENSORRT_CALLERS:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name = node.func.attr
            if name not in PYBIND_SIGNATURES or isinstance(node.func.value, ast.Name) and node.func.value.id in (
                    "json", "os", "self"):
                continue
            params, required = PYBIND_SIGNATURES[name]
            where = f"{path.name}:{node.lineno} {name}"
            assert not any(isinstance(a, ast.Starred) for a in node.args), where
            n_pos = len(node.args)
            keywords = [k.arg for k in node.keywords]
            assert None not in keywords, f"{where}: **kwargs cannot be checked"
            assert n_pos <= len(params), f"{where}: {n_pos} positional arguments, TensorRT takes {params}"
            assert set(keywords) <= set(params[n_pos:]), f"{where}: keywords {keywords}, TensorRT takes {params}"
            given = set(params[:n_pos]) | set(keywords)
            assert set(params[:required]) <= given, f"{where}: misses one of {params[:required]}"
            checked.append(name)
    # guards the walk: the calls the runtime and builder depend on were seen
    assert {"execute_async_v3", "set_tensor_address", "set_input_shape", "build_serialized_network",
            "set_timing_cache", "deserialize_cuda_engine", "set_shape"} <= set(checked)
