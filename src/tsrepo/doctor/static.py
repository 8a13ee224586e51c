"""The static pass: find every known unscriptable construct, with exact locations, before scripting.

TorchScript stops at its first error; this pass reads the source (via `inspect` and `ast`) of every
method TorchScript would compile (forward, @torch.jit.export methods and the methods they call) in
the model's class and every submodule class it reaches, and reports all of them at once. Attribute
and global checks look at the live objects, since their Python types decide convertibility.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import inspect
import textwrap
import types
from dataclasses import dataclass

import torch
from torch import nn

from tsrepo.doctor.catalogue import KINDS

ALLOWED_WITH = {"no_grad", "enable_grad", "record_function", "autocast"}
TENSOR_METHODS = {
    "sum",
    "mean",
    "max",
    "min",
    "argmax",
    "argmin",
    "prod",
    "norm",
    "long",
    "round",
    "floor",
    "ceil",
    "abs",
    "clamp",
    "count_nonzero",
    "std",
    "var",
    "amax",
    "amin",
    "cumsum",
}
SHAPE_CALLS = {
    "new_zeros",
    "new_ones",
    "new_full",
    "new_empty",
    "view",
    "reshape",
    "expand",
    "repeat",
    "zeros",
    "ones",
    "empty",
    "full",
    "randn",
    "rand",
    "arange",
}
CONTAINERS = (nn.ModuleList, nn.ModuleDict, nn.Sequential, nn.ParameterList, nn.ParameterDict)
SCALAR_TYPES = (bool, int, float, str, type(None), torch.device, torch.dtype, torch.Tensor)


@dataclass(frozen=True, order=True)
class Finding:
    file: str
    line: int
    col: int
    kind: str
    code: str
    detail: str

    def to_json(self) -> dict:
        k = KINDS[self.kind]
        return {
            "class": self.kind,
            "name": k.name,
            "file": self.file,
            "line": self.line,
            "column": self.col,
            "code": self.code,
            "detail": self.detail,
            "cause": k.cause,
            "fix": k.fix,
            "before": k.before,
            "after": k.after,
            "reference": k.reference,
        }


def convertible(value, depth: int = 0) -> bool:
    """Whether TorchScript can give this attribute value a type."""
    if depth > 6:
        return False
    if isinstance(value, SCALAR_TYPES):
        return True
    if isinstance(value, nn.Module):  # only as a registered submodule, never inside a plain container
        return depth == 0
    if isinstance(value, (list, tuple)):
        if not all(convertible(v, depth + 1) for v in value):
            return False
        if isinstance(value, list) and value:
            first = type(value[0])
            return all(type(v) is first for v in value)
        return True
    if isinstance(value, dict):
        if not value:
            return True
        keys = {type(k) for k in value}
        vals = {type(v) for v in value.values()}
        return (
            len(keys) == 1
            and keys <= {str, int, float}
            and len(vals) == 1
            and all(convertible(v, depth + 1) for v in value.values())
        )
    return False


def _user_class(value) -> bool:
    """A plain Python class TorchScript cannot type as an argument (dataclass configs and the like)."""
    if not inspect.isclass(value):
        return False
    module = getattr(value, "__module__", "") or ""
    if module.startswith(("torch", "typing", "builtins", "collections", "numpy")):
        return False
    if issubclass(value, nn.Module):
        return False
    return True


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _is_self_attr(node: ast.AST, self_name: str) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == self_name:
        return node.attr
    return None


def _int_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return True
    return isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and _int_literal(node.operand)


class _FunctionPass(ast.NodeVisitor):
    def __init__(self, func, module: nn.Module, file: str, offset: int, lines: list[str]):
        self.func = func
        self.module = module
        self.file = file
        self.offset = offset
        self.lines = lines
        self.findings: list[Finding] = []
        self.globals = getattr(func, "__globals__", {})
        code = getattr(func, "__code__", None)
        closure = getattr(func, "__closure__", None) or ()
        self.closure = {}
        if code is not None:
            for name, cell in zip(code.co_freevars, closure, strict=False):
                try:
                    self.closure[name] = cell.cell_contents
                except ValueError:
                    pass
        self.locals: set[str] = set()
        self.self_name = "self"
        self.unannotated: set[str] = set()
        self.module_lists: set[str] = set()  # local names bound to literal lists of submodules
        self.module_vars: set[str] = set()  # loop variables taken from such lists
        self.tensor_vars: set[str] = set()
        self.called_methods: set[str] = set()
        self.seen_attrs: set[str] = set()

    # -- helpers --
    def add(self, node: ast.AST, kind: str, detail: str) -> None:
        line = self.offset + getattr(node, "lineno", 1)
        col = getattr(node, "col_offset", 0) + 1
        idx = line - self.offset - 1
        code = self.lines[idx].strip() if 0 <= idx < len(self.lines) else ""
        self.findings.append(Finding(self.file, line, col, kind, code, detail))

    def attr_value(self, name: str):
        d = self.module.__dict__
        for store in ("_modules", "_parameters", "_buffers"):
            if name in d.get(store, {}):
                return d[store][name]
        return d.get(name, _MISSING)

    # -- the function itself --
    def run(self, tree: ast.FunctionDef) -> list[Finding]:
        args = tree.args
        all_args = args.posonlyargs + args.args
        if all_args:
            self.self_name = all_args[0].arg
        for a in all_args + args.kwonlyargs:
            self.locals.add(a.arg)
        if args.vararg:
            self.add(tree, "TS04", f"`*{args.vararg.arg}`: TorchScript cannot compile a variable number of arguments")
        if args.kwarg:
            self.add(
                tree, "TS04", f"`**{args.kwarg.arg}`: TorchScript cannot compile keyword arguments collected in a dict"
            )
        if args.kwonlyargs:
            names = ", ".join(a.arg for a in args.kwonlyargs)
            self.add(tree, "TS04", f"keyword-only argument(s) {names}: TorchScript cannot compile them")
        with_defaults = [a.arg for a in all_args][-len(args.defaults) :] if args.defaults else []
        defaults = dict(zip(with_defaults, args.defaults, strict=True))
        # A signature `# type: (...) -> ...` comment types every argument, as TorchScript reads it.
        typed_by_comment = tree.type_comment is not None
        for a in all_args[1:]:
            if typed_by_comment or a.type_comment is not None:
                continue
            if a.annotation is not None:
                self.check_annotation(a.annotation, f"argument `{a.arg}`")
                continue
            default = defaults.get(a.arg)
            if default is not None and not (isinstance(default, ast.Constant) and default.value is None):
                self.add(
                    a,
                    "TS13",
                    f"`{a.arg}` has a default ({ast.unparse(default)}) but no annotation, so TorchScript types it"
                    " as Tensor",
                )
            else:
                self.unannotated.add(a.arg)
        if tree.returns is not None:
            self.check_annotation(tree.returns, "the return value")
        for stmt in tree.body:
            self.visit(stmt)
        return self.findings

    def check_annotation(self, node: ast.AST, what: str) -> None:
        for sub in ast.walk(node):
            name = _dotted(sub) if isinstance(sub, (ast.Name, ast.Attribute)) else ""
            last = name.rsplit(".", 1)[-1]
            if last in ("Set", "set", "FrozenSet", "frozenset"):
                self.add(node, "TS02", f"{what} is annotated with a set type")
                return
            if isinstance(sub, ast.Name):
                value = self.globals.get(sub.id, self.closure.get(sub.id))
                if _user_class(value):
                    kind = "dataclass" if dataclasses.is_dataclass(value) else "class"
                    self.add(
                        node,
                        "TS04",
                        f"{what} is a plain Python {kind} ({sub.id}); TorchScript and Triton pass only tensors",
                    )
                    return

    # -- statements --
    def visit_FunctionDef(self, node):  # nested defs are compiled only if called; skip
        return

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for t in node.targets:
            self.bind(t, node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.check_annotation(node.annotation, f"`{ast.unparse(node.target)}`")
        if node.value is not None:
            self.visit(node.value)
        self.bind(node.target, node.value)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        self.bind(node.target, None)

    def bind(self, target: ast.AST, value: ast.AST | None) -> None:
        for n in ast.walk(target):
            if isinstance(n, ast.Name):
                self.locals.add(n.id)
        if isinstance(target, ast.Name) and value is not None:
            if (
                isinstance(value, (ast.List, ast.Tuple))
                and value.elts
                and all(
                    isinstance(self.attr_value(_is_self_attr(e, self.self_name) or ""), nn.Module) for e in value.elts
                )
            ):
                self.module_lists.add(target.id)
            if self.tensor_valued(value):
                self.tensor_vars.add(target.id)

    def tensor_valued(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in TENSOR_METHODS and not (
                isinstance(node.func.value, ast.Name) and node.func.value.id in ("math", "builtins")
            ):
                return True
        if isinstance(node, ast.Name):
            return node.id in self.tensor_vars
        return False

    def visit_For(self, node: ast.For) -> None:
        self.visit(node.iter)
        self.bind(node.target, None)
        if isinstance(node.iter, ast.Name) and isinstance(node.target, ast.Name):
            if node.iter.id in self.module_lists:
                self.module_vars.add(node.target.id)
            if node.iter.id in self.unannotated:
                self.add(
                    node.iter,
                    "TS13",
                    f"`{node.iter.id}` is iterated but has no annotation (TorchScript makes it a Tensor)",
                )
        for stmt in node.body + node.orelse:
            self.visit(stmt)

    def visit_Try(self, node) -> None:
        self.add(node, "TS11", "try/except")
        for stmt in node.body + node.orelse + node.finalbody:
            self.visit(stmt)
        for h in node.handlers:
            for stmt in h.body:
                self.visit(stmt)

    visit_TryStar = visit_Try

    def visit_With(self, node: ast.With) -> None:
        for item in node.items:
            expr = item.context_expr
            name = _dotted(expr.func if isinstance(expr, ast.Call) else expr).rsplit(".", 1)[-1]
            if name not in ALLOWED_WITH:
                self.add(
                    node, "TS11", f"`with {ast.unparse(expr)}`: only torch.no_grad()/enable_grad() can be compiled"
                )
            if item.optional_vars is not None:
                self.bind(item.optional_vars, None)
        for stmt in node.body:
            self.visit(stmt)

    # -- expressions --
    def visit_ListComp(self, node) -> None:
        if any(g.ifs for g in node.generators):
            self.add(node, "TS01", "a comprehension with an `if` filter")
        self.comprehension(node)

    def visit_DictComp(self, node) -> None:
        if any(g.ifs for g in node.generators):
            self.add(node, "TS01", "a comprehension with an `if` filter")
        self.comprehension(node)

    def visit_SetComp(self, node) -> None:
        self.add(node, "TS02", "a set comprehension")
        self.comprehension(node)

    def visit_GeneratorExp(self, node) -> None:
        self.add(node, "TS11", "a generator expression (use a list or a loop)")
        self.comprehension(node)

    def comprehension(self, node) -> None:
        for g in node.generators:
            self.bind(g.target, None)
        self.generic_visit(node)

    def visit_Set(self, node) -> None:
        self.add(node, "TS02", "a set literal")
        self.generic_visit(node)

    def visit_Lambda(self, node) -> None:
        self.add(node, "TS11", "a lambda")

    def visit_Yield(self, node) -> None:
        self.add(node, "TS11", "yield (a generator)")

    visit_YieldFrom = visit_Yield

    def visit_Subscript(self, node: ast.Subscript) -> None:
        attr = _is_self_attr(node.value, self.self_name)
        if attr is not None:
            value = self.attr_value(attr)
            if isinstance(value, (nn.ModuleList, nn.Sequential)) and not isinstance(node.slice, ast.Slice):
                if not _int_literal(node.slice):
                    self.add(
                        node,
                        "TS07",
                        f"`{ast.unparse(node)}`: the index `{ast.unparse(node.slice)}` is not an integer literal",
                    )
            elif isinstance(value, nn.ModuleDict):
                s = node.slice
                if not (isinstance(s, ast.Constant) and isinstance(s.value, str)):
                    self.add(node, "TS08", f"`{ast.unparse(node)}`: the key `{ast.unparse(s)}` is not a string literal")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        fname = _dotted(func)
        if fname == "getattr" and len(node.args) >= 2:
            second = node.args[1]
            if not (isinstance(second, ast.Constant) and isinstance(second.value, str)):
                self.add(node, "TS11", f"getattr with a computed name `{ast.unparse(second)}`")
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            self.add(node, "TS11", f"*-unpacking into `{ast.unparse(func)}(...)`")
        attr = _is_self_attr(func, self.self_name)
        if attr is not None:
            value = self.attr_value(attr)
            if isinstance(value, (nn.ModuleList, nn.ModuleDict)):
                self.add(
                    node, "TS09", f"`{ast.unparse(func)}` is a {type(value).__name__}, which has no forward to call"
                )
            elif isinstance(value, types.FunctionType):
                what = "a lambda" if value.__name__ == "<lambda>" else f"the plain function `{value.__name__}`"
                self.add(
                    node,
                    "TS11",
                    f"`{ast.unparse(func)}` is {what} stored as an attribute; TorchScript compiles methods and"
                    " submodules, not function-valued attributes (make it a method, or call the function directly)",
                )
            elif value is _MISSING and callable(getattr(type(self.module), attr, None)):
                self.called_methods.add(attr)
        if isinstance(func, ast.Name) and func.id in self.module_vars:
            self.add(node, "TS09", f"`{func.id}` is a module taken from a plain list")
        if isinstance(func, ast.Subscript) and isinstance(func.value, ast.Name) and func.value.id in self.module_lists:
            self.add(node, "TS09", f"`{ast.unparse(func)}` is a module taken from a plain list")
        if fname == "range":
            for a in node.args:
                if isinstance(a, ast.Name) and a.id in self.unannotated:
                    self.add(
                        a, "TS13", f"`{a.id}` is a range bound but has no annotation (TorchScript makes it a Tensor)"
                    )
                elif self.tensor_valued(a):
                    self.add(a, "TS12", f"`{ast.unparse(a)}` is a tensor used as a range bound")
        if fname == "len":
            for a in node.args:
                if isinstance(a, ast.Name) and a.id in self.unannotated:
                    self.add(a, "TS13", f"len(`{a.id}`) on an unannotated argument (TorchScript makes it a Tensor)")
        if isinstance(func, ast.Attribute) and func.attr in SHAPE_CALLS:
            for a in node.args:
                if isinstance(a, (ast.List, ast.Tuple)) and any(self.tensor_valued(e) for e in a.elts):
                    self.add(a, "TS12", f"a size list `{ast.unparse(a)}` holds a tensor")
                elif self.tensor_valued(a) and func.attr not in ("arange",):
                    self.add(a, "TS12", f"`{ast.unparse(a)}` is a tensor used as a size")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        attr = _is_self_attr(node, self.self_name)
        if attr is not None and isinstance(node.ctx, ast.Load) and attr not in self.seen_attrs:
            self.seen_attrs.add(attr)
            value = self.module.__dict__.get(attr, _MISSING)
            if value is not _MISSING and not convertible(value) and not callable(value):
                kind = "dataclass" if dataclasses.is_dataclass(value) else type(value).__name__
                hint = ""
                if isinstance(value, (list, tuple, dict)) and any(
                    isinstance(v, nn.Module) for v in (value.values() if isinstance(value, dict) else value)
                ):
                    hint = "; modules belong in nn.ModuleList / nn.ModuleDict"
                self.add(
                    node, "TS05", f"`self.{attr}` is a {kind} ({_short(value)}), which TorchScript cannot convert{hint}"
                )
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load) or node.id in self.locals or node.id == self.self_name:
            return
        if node.id in self.closure:
            value, where = self.closure[node.id], "closed-over"
        elif node.id in self.globals:
            value, where = self.globals[node.id], "module-level"
        else:
            return
        if isinstance(value, (dict, list, set, tuple, int, float, str, torch.Tensor)) and not isinstance(value, bool):
            self.add(node, "TS10", f"`{node.id}` is a {where} {type(value).__name__}")


class _Missing:
    pass


_MISSING = _Missing()


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _function_source(func) -> tuple[str, int, list[str]] | None:
    # File and lines must come from the same function: inspect.getsourcelines unwraps a decorated function
    # (functools.wraps' __wrapped__) but getsourcefile does not, which put a line of the library's model file
    # under the decorator's file (transformers' `utils/deprecation.py`). Callers pass the unwrapped function.
    try:
        lines, start = inspect.getsourcelines(func)
        file = inspect.getsourcefile(func) or inspect.getfile(func)
    except (OSError, TypeError):
        return None
    return file, start, lines


def _unwrap(func):
    """The function a decorator wrapped (functools.wraps chains), so its own file, lines and globals are read."""
    try:
        return inspect.unwrap(func)
    except ValueError:  # a __wrapped__ cycle
        return func


def _defining_function(cls: type, name: str):
    """The method as the class that defines it has it: the first class in the MRO whose own __dict__ holds
    `name`, unwrapped. A base class's decorator or __call__ never stands in for the method's own source."""
    for klass in cls.__mro__:
        if name in vars(klass):
            member = vars(klass)[name]
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            return _unwrap(member)
    return None


def _no_source(module: nn.Module, func) -> Finding:
    code = getattr(func, "__code__", None)
    file = code.co_filename if code else "<unknown>"
    line = code.co_firstlineno if code else 0
    return Finding(
        file,
        line,
        1,
        "TS06",
        f"class {type(module).__name__}",
        f"no source for {type(module).__qualname__}.{func.__name__} (defined in {file})",
    )


def _compiled_methods(module: nn.Module) -> list[str]:
    cls = type(module)
    names = ["forward"]
    for name, member in inspect.getmembers(cls):
        if getattr(member, "_torchscript_modifier", None) is torch._jit_internal.FunctionModifiers.EXPORT:
            names.append(name)
    return names


def _skip(module: nn.Module) -> bool:
    if isinstance(module, torch.jit.ScriptModule):
        return True
    mod = type(module).__module__ or ""
    return mod.startswith("torch.") and not mod.startswith("torch.testing")


def analyse(model: nn.Module) -> list[Finding]:
    """Every known unscriptable construct in the model and the submodules it reaches."""
    findings: set[Finding] = set()
    done: set[tuple] = set()
    for module in model.modules():
        if _skip(module):
            continue
        queue = _compiled_methods(module)
        visited: set[str] = set()
        while queue:
            name = queue.pop(0)
            if name in visited:
                continue
            visited.add(name)
            func = _defining_function(type(module), name)
            if not isinstance(func, types.FunctionType):
                continue
            key = (id(type(module)), func.__qualname__, id(module))
            if key in done:
                continue
            done.add(key)
            if (getattr(func, "__module__", "") or "").startswith("torch."):
                continue
            src = _function_source(func)
            if src is None:
                findings.add(_no_source(module, func))
                continue
            file, start, lines = src
            try:
                # type_comments: `# type: (List[Tensor]) -> Tensor` annotates arguments for TorchScript too.
                tree = ast.parse(textwrap.dedent("".join(lines)), type_comments=True)
            except SyntaxError:
                continue
            fdef = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
            if fdef is None:
                continue
            # Decorators come before `def`: offset so that AST line 1 is the first source line.
            p = _FunctionPass(func, module, file, start - 1, lines)
            try:
                findings.update(p.run(fdef))
            except Exception:  # an unreadable method must not hide TorchScript's own error
                continue
            queue.extend(sorted(p.called_methods))
    return sorted(findings, key=lambda f: (f.file, f.line, f.col, f.kind, f.detail))


__all__ = ["Finding", "analyse", "builtins", "convertible"]
