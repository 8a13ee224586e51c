from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsrepo.errors import SpecError, TsrepoError
from tsrepo.spec import Dim, ExportMode, Kind, load_spec, parse_input_flag, parse_spec

GOOD = """
[defaults]
max_batch_size = 8
instance_group = [{ kind = "gpu", count = 1 }]
dynamic_batching = { max_queue_delay_microseconds = 100 }

[[model]]
name = "m"
source = "tsrepo_testmodels:linear"
inputs = [{ name = "x", dtype = "float32", shape = [4] }]
"""


def _model_with(extra: str = "", inputs: str = '[{ name = "x", dtype = "float32", shape = [4] }]', defaults: str = ""):
    return f"""
[defaults]
max_batch_size = 8
{defaults}

[[model]]
name = "m"
source = "tsrepo_testmodels:linear"
inputs = {inputs}
{extra}
"""


def test_good_spec_applies_defaults(write_spec):
    spec = load_spec(write_spec(GOOD))
    (m,) = spec.models
    assert m.max_batch_size == 8
    assert m.instance_groups[0].kind is Kind.GPU and m.instance_groups[0].count == 1
    assert m.dynamic_batching.max_queue_delay_microseconds == 100
    assert m.dynamic_batching.preferred_batch_size == ()
    assert m.export is ExportMode.AUTO
    assert m.inputs[0].shape == (Dim(4, 4),)


def test_dynamic_dim_parses_and_sizes_cover_min_middle_max(write_spec):
    spec = load_spec(
        write_spec(_model_with(inputs='[{ name = "x", dtype = "int64", shape = ["2..10"], range = [0, 7] }]'))
    )
    dim = spec.models[0].inputs[0].shape[0]
    assert dim == Dim(2, 10) and dim.dynamic
    assert dim.sizes() == [2, 6, 10]
    assert spec.models[0].inputs[0].range == (0, 7)


def test_model_overrides_defaults(write_spec):
    spec = load_spec(
        write_spec(
            _model_with(
                "max_batch_size = 0\ndynamic_batching = false",
                defaults="dynamic_batching = { max_queue_delay_microseconds = 5 }",
            )
        )
    )
    assert spec.models[0].max_batch_size == 0 and spec.models[0].dynamic_batching is None


BAD_CASES = {
    "unknown key": (_model_with("max_batch_sise = 3"), "max_batch_sise", "did you mean `max_batch_size`"),
    "unknown key in defaults": (_model_with(defaults="bogus = 1"), "bogus", "unknown key"),
    "missing source": ('[[model]]\nname = "m"\ninputs = [{ dtype = "float32", shape = [1] }]', "source", "missing"),
    "missing inputs": ('[[model]]\nname = "m"\nsource = "a:b"', "inputs", "missing"),
    "missing dtype": (_model_with(inputs='[{ name = "x", shape = [4] }]'), "inputs[0].dtype", "missing"),
    "wrong type": (_model_with('max_batch_size = "8"'), "max_batch_size", "expected an integer"),
    "bool for int": (_model_with('instance_group = [{ kind = "cpu", count = true }]'), "count", "expected an integer"),
    "zero dim": (_model_with(inputs='[{ name = "x", dtype = "float32", shape = [0] }]'), "shape[0]", "not positive"),
    "negative dim": (
        _model_with(inputs='[{ name = "x", dtype = "float32", shape = [3, -1] }]'),
        "shape[1]",
        "not positive",
    ),
    "min > max": (
        _model_with(inputs='[{ name = "x", dtype = "float32", shape = ["9..3"] }]'),
        "shape[0]",
        "greater than max",
    ),
    "bad range syntax": (
        _model_with(inputs='[{ name = "x", dtype = "float32", shape = ["3-9"] }]'),
        "shape[0]",
        "min..max",
    ),
    "unknown dtype": (_model_with(inputs='[{ name = "x", dtype = "float31", shape = [4] }]'), "dtype", "unknown dtype"),
    "bfloat16 input": (_model_with(inputs='[{ name = "x", dtype = "bfloat16", shape = [4] }]'), "dtype", ".float()"),
    "name with slash": (_model_with().replace('name = "m"', 'name = "a/b"'), "name", "letters, digits"),
    "name with dotdot": (_model_with().replace('name = "m"', 'name = ".."'), "name", "'..'"),
    "name with space": (_model_with().replace('name = "m"', 'name = "my model"'), "name", "no spaces"),
    "empty name": (_model_with().replace('name = "m"', 'name = ""'), "name", "is empty"),
    "two models one name": (
        _model_with() + '\n[[model]]\nname = "m"\nsource = "a:b"\ninputs = [{ dtype = "float32", shape = [1] }]',
        "name",
        "two models",
    ),
    "negative max_batch_size": (_model_with("max_batch_size = -1"), "max_batch_size", "must be at least 0"),
    "batching without batch dim": (
        _model_with("max_batch_size = 0\ndynamic_batching = { max_queue_delay_microseconds = 1 }"),
        "dynamic_batching",
        "max_batch_size > 0",
    ),
    "preferred too big": (
        _model_with("dynamic_batching = { preferred_batch_size = [16] }"),
        "preferred_batch_size",
        "exceed",
    ),
    "unknown backend parameter": (
        _model_with('parameters = { INFERENCE_MOD = "true" }'),
        "INFERENCE_MOD",
        "silently ignore",
    ),
    "nvfuser": (_model_with('parameters = { ENABLE_NVFUSER = "true" }'), "ENABLE_NVFUSER", "removed"),
    "bad boolean parameter": (_model_with('parameters = { INFERENCE_MODE = "yes" }'), "INFERENCE_MODE", "true/on/1"),
    "gpus on cpu group": (_model_with('instance_group = [{ kind = "cpu", gpus = [0] }]'), "gpus", "only a kind"),
    "unknown kind": (_model_with('instance_group = [{ kind = "tpu" }]'), "kind", "unknown kind"),
    "bad export": (_model_with('export = "onnx"'), "export", "unknown mode"),
    "zero version": (_model_with("version = 0"), "version", "at least 1"),
    "range on float reversed": (
        _model_with(inputs='[{ name = "x", dtype = "float32", shape = [4], range = [1.0, 0.0] }]'),
        "range",
        "must be below",
    ),
    # Issue 8, defect 1: names Triton cannot load.
    "name with trailing newline": (_model_with().replace('name = "m"', 'name = "lin\\n"'), "name", "control characters"),
    "name with tab": (_model_with().replace('name = "m"', 'name = "a\\tb"'), "name", "control characters"),
    "hidden name": (_model_with().replace('name = "m"', 'name = ".hidden"'), "name", "starts with '.'"),
    "very long name": (_model_with().replace('name = "m"', f'name = "{"m" * 300}"'), "name", "characters long"),
    "output name with newline": (_model_with('output_names = ["scores\\n"]'), "output_names", "identifier"),
    "input name with newline": (
        _model_with(inputs='[{ name = "x\\n", dtype = "float32", shape = [4] }]'),
        "inputs[0].name",
        "identifier",
    ),
    # Issue 8, defect 2: sizes and numbers that would crash sampling.
    "huge static shape": (
        _model_with(inputs='[{ name = "x", dtype = "float32", shape = [1000000000, 4] }]'),
        "inputs[0].shape",
        "GiB",
    ),
    "huge dynamic dim": (
        _model_with(inputs='[{ name = "x", dtype = "float32", shape = ["1..1000000000"] }]'),
        "inputs[0].shape",
        "GiB",
    ),
    "dim over int64": (
        _model_with(inputs='[{ name = "x", dtype = "float32", shape = [9223372036854775807] }]'),
        "shape[0]",
        "at most 2147483647",
    ),
    "dynamic max over int32": (
        _model_with(inputs='[{ name = "x", dtype = "float32", shape = ["1..99999999999"] }]'),
        "shape[0]",
        "at most 2147483647",
    ),
    "negative seed": (_model_with("seed = -1"), "seed", "at least 0"),
    "huge seed": (_model_with("seed = 18446744073709551616"), "seed", "at most"),
    "nan in range": (
        _model_with(inputs='[{ name = "x", dtype = "float32", shape = [4], range = [nan, 1.0] }]'),
        "range",
        "finite",
    ),
    "inf in range": (
        _model_with(inputs='[{ name = "x", dtype = "float32", shape = [4], range = [0.0, inf] }]'),
        "range",
        "finite",
    ),
    "range wider than float16": (
        _model_with(inputs='[{ name = "x", dtype = "float16", shape = [4], range = [0.0, 1e6] }]'),
        "range",
        "does not fit float16",
    ),
    "range wider than int8": (
        _model_with(inputs='[{ name = "x", dtype = "int8", shape = [4], range = [0, 1000] }]'),
        "range",
        "does not fit int8",
    ),
    "float range spanning more than float64": (
        _model_with(inputs='[{ name = "x", dtype = "float64", shape = [4], range = [-1e308, 1e308] }]'),
        "range",
        "does not fit",
    ),
    "nan rtol": (_model_with("rtol = nan"), "rtol", "finite"),
    "inf atol": (_model_with("atol = inf"), "atol", "finite"),
    # Issue 8, defect 3: values over int32 named in the spec, not in a config.pbtxt never written.
    "count over int32": (_model_with('instance_group = [{ kind = "cpu", count = 4294967296 }]'), "count", "at most"),
    "gpu id over int32": (_model_with('instance_group = [{ kind = "gpu", gpus = [4294967296] }]'), "gpus", "from 0 to"),
    "warmup count over int32": (_model_with("warmup = { count = 4294967296 }"), "warmup.count", "at most"),
    "warmup batch over int32": (_model_with("warmup = { batch_size = 4294967296 }"), "warmup.batch_size", "at most"),
    "latest over int32": (_model_with("version_policy = { latest = 4294967296 }"), "version_policy.latest", "at most"),
    "specific over int32": (
        _model_with("version_policy = { specific = [4294967296] }"),
        "version_policy.specific",
        "from 1 to",
    ),
    "max_batch_size over int32": (_model_with("max_batch_size = 4294967296"), "max_batch_size", "at most 2147483647"),
    "version over int32": (_model_with("version = 4294967296"), "version", "at most"),
    "queue delay over an hour": (
        _model_with("dynamic_batching = { max_queue_delay_microseconds = 18446744073709551615 }"),
        "max_queue_delay_microseconds",
        "at most",
    ),
    "preferred size twice": (
        _model_with("dynamic_batching = { preferred_batch_size = [2, 2] }"),
        "preferred_batch_size",
        "twice",
    ),
    "huge thread count": (
        _model_with('parameters = { INTRA_OP_THREAD_COUNT = "99999999999999999999" }'),
        "INTRA_OP_THREAD_COUNT",
        "thread count from 1",
    ),
    "no models": ("[defaults]\nmax_batch_size = 1\n", "model", "no [[model]]"),
    "top-level typo": ('[[models]]\nname = "m"', "models", "unknown key"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_spec_names_file_model_and_field(case, write_spec):
    text, field, fragment = BAD_CASES[case]
    path = write_spec(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert field in message, message
    assert fragment in message, message


def test_inter_op_thread_count_allowed_on_one_model_only(write_spec):
    one = _model_with("parameters = { INTER_OP_THREAD_COUNT = 2 }")
    assert load_spec(write_spec(one)).models[0].parameters == (("INTER_OP_THREAD_COUNT", "2"),)
    two = (
        one
        + '\n[[model]]\nname = "n"\nsource = "a:b"\ninputs = [{ dtype = "float32", shape = [1] }]\nparameters = { INTER_OP_THREAD_COUNT = 1 }'
    )
    with pytest.raises(SpecError, match="process-wide"):
        load_spec(write_spec(two))


def test_missing_spec_file_and_invalid_toml_are_spec_errors(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[model]\nname=")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(bad)


def test_input_flag_parses_static_and_dynamic_dims():
    assert parse_input_flag("image:float32:3,64,64") == {"name": "image", "dtype": "float32", "shape": [3, 64, 64]}
    assert parse_input_flag("ids:int64:1..128") == {"name": "ids", "dtype": "int64", "shape": ["1..128"]}
    with pytest.raises(SpecError, match="NAME:DTYPE:SHAPE"):
        parse_input_flag("image-float32")


# Random TOML documents: the loader returns a spec or raises TsrepoError, never anything else.
_scalars = st.one_of(
    st.integers(-3, 300),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        ["float32", "int64", "gpu", "cpu", "auto", "1..8", "8..1", "x", "", "a/b", "m", "tsrepo_testmodels:linear"]
    ),
)
_keys = st.sampled_from(
    [
        "name",
        "source",
        "inputs",
        "dtype",
        "shape",
        "range",
        "max_batch_size",
        "instance_group",
        "kind",
        "count",
        "gpus",
        "dynamic_batching",
        "max_queue_delay_microseconds",
        "preferred_batch_size",
        "parameters",
        "export",
        "version",
        "warmup",
        "version_policy",
        "latest",
        "batch_safe",
        "tensor_names",
        "output_names",
        "INFERENCE_MODE",
        "bogus",
    ]
)
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(_keys, children, max_size=5)),
    max_leaves=20,
)
_documents = st.fixed_dictionaries(
    {},
    optional={
        "defaults": st.dictionaries(_keys, _values, max_size=4),
        "model": st.lists(st.dictionaries(_keys, _values, max_size=6), max_size=3),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents)
def test_random_documents_give_a_spec_or_a_tsrepo_error(doc):
    try:
        spec = parse_spec(doc, "fuzz.toml", Path("."))
    except TsrepoError as e:
        assert str(e).startswith("fuzz.toml")
    else:
        assert spec.models


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_random_text_gives_a_spec_or_a_tsrepo_error(text):
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    try:
        parse_spec(data, "fuzz.toml", Path("."))
    except TsrepoError:
        pass
