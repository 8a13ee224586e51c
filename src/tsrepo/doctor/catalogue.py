"""The known TorchScript failure classes: cause, fix, a before/after snippet, and the reference section.

Each entry records what torch 2.13 does (observed with the twin modules in tests/doctor_cases.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    id: str
    name: str
    cause: str
    fix: str
    before: str
    after: str
    reference: str  # section of the TorchScript language reference


KINDS: dict[str, Kind] = {
    k.id: k
    for k in (
        Kind(
            "TS01",
            "comprehension with an if filter",
            "TorchScript compiles list and dict comprehensions but not their `if` clauses.",
            "Build the list with a loop and an `if`, or filter with a mask.",
            "kept = [p for p in parts if p.sum() > 0]",
            "kept: List[Tensor] = []\nfor p in parts:\n    if bool(p.sum() > 0):\n        kept.append(p)",
            "Expressions > List Comprehensions",
        ),
        Kind(
            "TS02",
            "set",
            "TorchScript has no set type: set literals, set comprehensions and Set[...] annotations are refused.",
            "Use a Dict[K, bool] as a set, or a list and `in`.",
            "seen = {a, b}",
            "seen: Dict[int, bool] = {a: True, b: True}",
            "Types > Supported Types",
        ),
        Kind(
            "TS03",
            "dict comprehension",
            "Older TorchScript refused dict comprehensions; torch 2.13 compiles them (no finding is raised).",
            "Nothing to do on torch >= 2.x; on older torch, build the dict with a loop.",
            "d = {k: v for k, v in zip(keys, values)}",
            "d: Dict[str, Tensor] = {}\nfor k, v in zip(keys, values):\n    d[k] = v",
            "Expressions > Dict Comprehensions",
        ),
        Kind(
            "TS04",
            "forward signature TorchScript cannot type",
            "A compiled method cannot take *args or **kwargs, keyword-only arguments with defaults, or "
            "arguments and results of a plain Python class (a config dataclass, say): TorchScript needs one "
            "static type per argument, and Triton passes only tensors.",
            "Take each tensor as its own argument; move configuration into __init__ (ints, floats, tensors).",
            "def forward(self, x, cfg: Config, **kwargs):\n    return x * cfg.scale",
            "def __init__(self, cfg: Config):\n    super().__init__()\n    self.scale = cfg.scale\n\n"
            "def forward(self, x: Tensor) -> Tensor:\n    return x * self.scale",
            "Types > Default Types; Python Functions and Modules",
        ),
        Kind(
            "TS05",
            "module attribute of a type TorchScript cannot convert",
            "TorchScript converts every attribute a compiled method reads; a config dataclass, a list of "
            "custom objects or a dict of mixed value types has no TorchScript type.",
            "Compute what forward needs in __init__ and store it as tensors, ints, floats, bools, strings or "
            "uniform lists/dicts of those (annotate them, or mark constants Final).",
            "self.cfg = Config(dim=16)\n...\nreturn x * self.cfg.scale",
            "self.scale: float = cfg.scale\n...\nreturn x * self.scale",
            "Module Attributes",
        ),
        Kind(
            "TS06",
            "source code not available",
            "TorchScript compiles from source it reads with `inspect`; a class defined in a REPL, a notebook "
            'cell, `exec` or created dynamically has none ("could not get source code").',
            'Move the class into a .py file and import it, or export with tracing (export = "trace").',
            "exec(code)  # defines Model",
            "# models.py\nclass Model(nn.Module): ...\n\nfrom models import Model",
            "Python Functions and Modules",
        ),
        Kind(
            "TS07",
            "nn.ModuleList indexed by a variable",
            "TorchScript unrolls ModuleList at compile time, so it can only index it with an integer literal.",
            "Iterate over the list (with enumerate or zip when you need the index).",
            "for i in range(len(self.layers)):\n    x = self.layers[i](x)",
            "for i, layer in enumerate(self.layers):\n    x = layer(x)",
            "Module Containers > ModuleList",
        ),
        Kind(
            "TS08",
            "nn.ModuleDict indexed by a non-literal key",
            "TorchScript resolves ModuleDict lookups at compile time, so the key must be a string literal.",
            "Iterate with .items() and match the key, or use string literals, or type the dict with a "
            "@torch.jit.interface.",
            "for name in self.names:\n    out = out + self.heads[name](x)",
            "for name, head in self.heads.items():\n    out = out + head(x)",
            "Module Containers > ModuleDict",
        ),
        Kind(
            "TS09",
            "module called through a container",
            "A submodule taken out of a plain list or tuple has no static module type, and a ModuleList or "
            "ModuleDict has no forward of its own, so TorchScript cannot call it "
            "(\"object has no attribute or method '__call__'\").",
            "Keep the submodules in an nn.ModuleList / nn.Sequential and iterate it, or call each one by name.",
            "for m in [self.a, self.b]:\n    x = m(x)",
            "self.blocks = nn.ModuleList([a, b])  # in __init__\nfor block in self.blocks:\n    x = block(x)",
            "Module Containers",
        ),
        Kind(
            "TS10",
            "global or closure state in a compiled method",
            "TorchScript does not capture module-level or closed-over Python values (dicts, lists, ints, "
            'tensors) in compiled code ("python value of type ... cannot be used as a value").',
            "Store the value on the module in __init__ (a Final constant, an attribute or a buffer).",
            'SCALES = {"a": 2.0}\n...\nreturn x * SCALES["a"]',
            'self.scale_a: Final[float] = SCALES["a"]  # in __init__\n...\nreturn x * self.scale_a',
            "Python Functions and Modules > Global variables; Module Attributes",
        ),
        Kind(
            "TS11",
            "dynamic Python TorchScript cannot compile",
            "getattr with a computed name, try/except, `with` on anything but torch.no_grad()/enable_grad(), "
            "generators and yield, lambdas, and *-unpacking into calls have no TorchScript equivalent.",
            "Resolve names in __init__, check conditions instead of catching, use plain loops and named "
            "functions, and pass arguments one by one.",
            "f = lambda t: t + 1\nreturn torch.add(*parts)",
            "def add_one(t: Tensor) -> Tensor: ...\nreturn torch.add(parts[0], parts[1])",
            "Statements; Expressions",
        ),
        Kind(
            "TS12",
            "tensor used where a Python value is needed",
            "A tensor (e.g. from .sum() or .max()) is used as a loop bound, a size or a literal container "
            'element, where TorchScript needs an int ("found Tensor", "Unsupported value kind: Tensor").',
            "Convert explicitly with int(t) (or t.item()), or use x.size(d) / x.shape[d], which are ints.",
            "n = x.sum()\nfor i in range(n): ...",
            "n = int(x.sum())\nfor i in range(n): ...",
            "Types > Type Refinement; Builtin Functions",
        ),
        Kind(
            "TS13",
            "unannotated argument that is not a Tensor",
            "TorchScript types every unannotated argument as Tensor, so an int flag, a bool default or a "
            "list of tensors fails to compile, or compiles to the wrong type.",
            "Annotate the argument: `k: int`, `flag: bool = False`, `xs: List[Tensor]`.",
            "def forward(self, x, k, flag=False):",
            "def forward(self, x: Tensor, k: int, flag: bool = False) -> Tensor:",
            "Types > Default Types",
        ),
        Kind(
            "TS00",
            "TorchScript refused this code",
            "TorchScript could not compile this line (not one of the known classes).",
            "Read TorchScript's message quoted above; rewrite the line with supported constructs, or trace.",
            "",
            "",
            "TorchScript Language Reference",
        ),
        Kind(
            "TR01",
            "tracing froze Python behaviour",
            "Tracing records one run: Python values computed from tensors (bools, ints, shapes turned into "
            "constants) are frozen into the graph, and data-dependent branches keep the path taken.",
            "Make the model scriptable, or check the traced model at other input sizes (tsrepo does).",
            "if x.sum() > 0:  # traced: always the branch taken at export",
            "script the module, or compute with torch.where(...)",
            "torch.jit.trace > Tracer Warnings",
        ),
        Kind(
            "TR02",
            "traced model diverges from eager",
            "The traced module gives other answers than the eager model at a second input size or batch "
            "size: tracing froze a shape or a branch.",
            "Make the model scriptable (tsrepo doctor lists why it is not), or remove the shape-dependent "
            "Python logic.",
            "",
            "",
            "torch.jit.trace",
        ),
        # torch.export (export = "aoti"): observed on torch 2.13 with the twins in tests/export_cases.py.
        Kind(
            "EX01",
            "data-dependent control flow",
            "torch.export traces with symbolic shapes and no real values, so a Python `if` on a tensor's value "
            "cannot be decided (non-strict: 'Could not guard on data-dependent expression'; strict: "
            "'Data-dependent branching').",
            "Express both branches with torch.cond (or compute both and pick with torch.where).",
            "if x.sum() > 0:\n    return x * 2\nreturn x - 1",
            "return torch.cond(x.sum() > 0, lambda x: x * 2, lambda x: x - 1, (x,))",
            "torch.export > Control Flow Ops (torch.cond)",
        ),
        Kind(
            "EX02",
            "data-dependent output shape",
            "A size computed from tensor values (nonzero, masked_select, `.item()` used as a size) is an unbacked "
            "symbol; a later branch or slice on it needs a fact torch.export cannot prove.",
            "State what you know with torch._check (e.g. torch._check(n >= 0), torch._check(n <= x.shape[1])), "
            "or keep shapes static (a mask instead of nonzero).",
            "n = int((x > 0).sum().item())\nreturn x[:, :n]",
            "n = int((x > 0).sum().item())\ntorch._check(n >= 0)\ntorch._check(n <= x.shape[1])\nreturn x[:, :n]",
            "torch.export > Data-dependent errors (unbacked symbols, torch._check)",
        ),
        Kind(
            "EX03",
            "a dynamic dim the code specialises",
            "The spec marks the dim dynamic (min..max), but the code only works for part of that range (or one "
            "size): torch.export's guards contradict the range ('Constraints violated').",
            "Use the range torch.export suggests in the spec (shown above as the spec field to change), or make "
            "the code work for the whole range.",
            'inputs = [{ name = "x", dtype = "float32", shape = ["1..16"] }]  # the code slices x[:, :6]',
            'inputs = [{ name = "x", dtype = "float32", shape = ["8..16"] }]',
            "torch.export > Expressing Dynamism (Dim, suggested fixes)",
        ),
        Kind(
            "EX04",
            "non-tensor input or output",
            "Triton passes and returns only tensors, and the torch_aoti backend binds tensor leaves of tuples, "
            "lists and dicts by position; torch.export freezes an int/bool/str argument's example value into "
            "the package, and a str output cannot be sent.",
            "Take tensors only (configuration goes in __init__) and return tensors (a tuple, list or dict of them).",
            "def forward(self, x, k: int):\n    return x * k, 'label'",
            "def __init__(self, k: int):\n    ...\n    self.k = k\n\ndef forward(self, x):\n    return x * self.k",
            "torch.export > Non-tensor inputs; Triton PyTorch backend README (torch_aoti)",
        ),
        Kind(
            "EX05",
            "Python side effect or unsupported builtin under strict export",
            "Strict export (TorchDynamo) refuses calls it cannot trace (random.random, C extensions, I/O). "
            "Non-strict export, which tsrepo builds with, runs them once and freezes their result into the "
            "package: the served model never calls them again.",
            "Use torch equivalents (torch.rand, register a buffer) or move the call out of forward.",
            "return x * random.random()",
            "return x * torch.rand((), device=x.device)",
            "torch.export > Strict vs non-strict tracing",
        ),
        Kind(
            "EX06",
            "an op without a CPU / AOTInductor kernel",
            "torch.export runs every op on fake tensors and AOTInductor needs a kernel for the target device; "
            "an op registered only for CUDA, or a custom op without a fake (meta) implementation, stops it.",
            "Register the op's CPU kernel and its fake implementation (torch.library.register_fake), or replace "
            "it with standard torch ops.",
            'lib.impl("my_op", cuda_kernel, "CUDA")',
            'lib.impl("my_op", cpu_kernel, "CPU")\n@torch.library.register_fake("ns::my_op")\ndef _(x): ...',
            "torch.library > Custom operators (fake / meta kernels)",
        ),
        Kind(
            "SV01",
            "what Triton's PyTorch backend cannot serve",
            "The backend passes only Tensor arguments, one config input per forward argument, and serves a "
            "Tensor, a List[str] or a tuple of those, batch first when max_batch_size > 0, with dims of at least "
            "1 or -1. `tsrepo build` refuses anything else; doctor runs the same checks.",
            "Say it in the spec rather than editing the model: `arguments = { attn_mask = \"none\" }` fixes an "
            "argument, `list_inputs = [\"images\"]` serves a List[Tensor] as one tensor, `outputs = [{ dims = "
            "[-1, 4] }]` declares dims that follow the data; dict and list outputs are wrapped by build.",
            "def forward(self, images: List[Tensor], attn_mask: Optional[Tensor] = None):",
            'inputs = [{ name = "images", dtype = "float32", shape = [3, 64, 64] }]\nlist_inputs = ["images"]\n'
            'arguments = { attn_mask = "none" }',
            "Triton PyTorch backend: model inputs and outputs (README)",
        ),
        Kind(
            "EX00",
            "torch.export refused the model",
            "torch.export failed with an error that is not one of the known classes.",
            "Read torch.export's message quoted above; `torch.export.draft_export` lists every problem at once.",
            "",
            "",
            "torch.export",
        ),
    )
}
