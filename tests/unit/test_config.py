from __future__ import annotations

import shutil

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo import config
from tsrepo.errors import ConfigError
from tsrepo.spec import DynamicBatching, VersionPolicy


def _cfg(**overrides) -> config.ModelConfig:
    fields = dict(
        name="m",
        max_batch_size=8,
        inputs=(config.TensorConfig("x", "TYPE_FP32", (3, -1)),),
        outputs=(
            config.TensorConfig("OUTPUT__0", "TYPE_FP32", (10,)),
            config.TensorConfig("tags__1", "TYPE_STRING", (1,), ()),
        ),
        instance_groups=(config.InstanceGroupConfig("KIND_GPU", 2, (0, 1)), config.InstanceGroupConfig("KIND_CPU", 1)),
        dynamic_batching=DynamicBatching(250, (4, 8)),
        parameters=(("INFERENCE_MODE", "true"), ("INTRA_OP_THREAD_COUNT", "2")),
        warmup=(config.WarmupConfig("w", 2, 3, (config.TensorConfig("x", "TYPE_FP32", (3, 5)),)),),
        version_policy=VersionPolicy("specific", (1, 3)),
    )
    fields.update(overrides)
    return config.ModelConfig(**fields)


def test_every_field_round_trips_through_tritons_schema():
    cfg = _cfg()
    text = config.render(cfg)
    parsed = config.prove(text, cfg, "t")
    assert parsed.instance_group[0].gpus == [0, 1]
    assert parsed.dynamic_batching.preferred_batch_size == [4, 8]
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 250
    assert parsed.parameters["INTRA_OP_THREAD_COUNT"].string_value == "2"
    assert list(parsed.version_policy.specific.versions) == [1, 3]
    assert parsed.model_warmup[0].inputs["x"].random_data
    assert parsed.output[1].HasField("reshape") and list(parsed.output[1].reshape.shape) == []


@pytest.mark.parametrize("policy", [VersionPolicy("latest", (2,)), VersionPolicy("all")])
def test_version_policies_round_trip(policy):
    cfg = _cfg(version_policy=policy)
    parsed = config.prove(config.render(cfg), cfg, "t")
    assert parsed.version_policy.WhichOneof("policy_choice") == policy.kind


def test_max_batch_size_zero_is_written_explicitly():
    cfg = _cfg(max_batch_size=0, dynamic_batching=None, warmup=())
    text = config.render(cfg)
    assert "max_batch_size: 0" in text
    config.prove(text, cfg, "t")


def test_no_preferred_batch_size_unless_asked():
    cfg = _cfg(dynamic_batching=DynamicBatching(100, ()))
    text = config.render(cfg)
    assert "preferred_batch_size" not in text
    assert text_format.Parse(text, pb.ModelConfig()).HasField("dynamic_batching")


@pytest.mark.parametrize("evil", ['a" max_batch_size: 99 name: "b', "line\nbreak", "back\\slash", "ünï"])
def test_strings_are_escaped_so_nothing_can_be_injected(evil):
    cfg = _cfg(name=evil)
    parsed = config.prove(config.render(cfg), cfg, "t")
    assert parsed.name == evil and parsed.max_batch_size == 8


def test_template_that_drops_a_field_fails_the_build(tmp_path):
    shutil.copy(config.templates_dir() / config.CONFIG_TEMPLATE, tmp_path / config.CONFIG_TEMPLATE)
    path = tmp_path / config.CONFIG_TEMPLATE
    path.write_text(path.read_text().replace("    count: {{ g.count }}\n", ""))
    cfg = _cfg()
    with pytest.raises(ConfigError, match="does not match") as info:
        config.prove(config.render(cfg, tmp_path), cfg, "t")
    assert "count" in str(info.value)


def test_template_with_undefined_variable_fails(tmp_path):
    (tmp_path / config.CONFIG_TEMPLATE).write_text("name: {{ model.nmae | pbstr }}\n")
    with pytest.raises(ConfigError, match="undefined"):
        config.render(_cfg(), tmp_path)


def test_output_that_is_not_a_config_fails_the_parse():
    with pytest.raises(ConfigError, match="schema rejects"):
        config.parse("name: 'm'\nmax_batch_sizes: 3\n", "t")


def test_libtorch_rules_catch_input_count_and_mixed_names():
    parsed = config.parse(config.render(_cfg()), "t")
    config.check_libtorch_rules(parsed, ["x"], "t")
    with pytest.raises(ConfigError, match="configuration expects 1 inputs, model provides 2"):
        config.check_libtorch_rules(parsed, ["x", "y"], "t")
    two = _cfg(inputs=(config.TensorConfig("x", "TYPE_FP32", (1,)), config.TensorConfig("weird", "TYPE_FP32", (1,))))
    with pytest.raises(ConfigError, match="neither all equal"):
        config.check_libtorch_rules(config.parse(config.render(two), "t"), ["x", "y"], "t")
