"""The cluster spec ``connect`` takes: dicts, ``tf.train.ClusterSpec`` and cluster resolvers,
and the JSON forms the command-line tools read it from."""

from __future__ import annotations

import json

import pytest
import tensorflow as tf

from allreduce.cluster.cluster_spec import check_cluster_spec, parse_json_spec, parse_tf_config

SPEC = {"worker": ["127.0.0.1:5000", "127.0.0.1:5001"], "localhost": ["127.0.0.1:6000"]}
WORKERS = {"worker": SPEC["worker"]}


def test_a_simple_cluster_resolver_gives_its_spec():
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(tf.train.ClusterSpec(SPEC))
    assert check_cluster_spec(resolver, "worker", "localhost") == (WORKERS, "127.0.0.1:6000")


def test_a_tf_config_cluster_resolver_gives_the_cluster_of_tf_config(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": SPEC, "task": {"type": "worker", "index": 1}}))
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    assert check_cluster_spec(resolver, "worker", "localhost") == (WORKERS, "127.0.0.1:6000")


def test_a_resolver_of_an_empty_cluster_is_refused_naming_the_job(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    with pytest.raises(
        ValueError, match=r"job_name 'worker' is not a worker job of cluster_spec \(jobs: \[\]\)"
    ):
        check_cluster_spec(resolver, "worker", "localhost")


def test_something_else_is_a_type_error_that_names_resolvers():
    with pytest.raises(TypeError, match="ClusterResolver, got list"):
        check_cluster_spec(["127.0.0.1:5000"], "worker", "localhost")


def test_tf_config_without_a_task_gives_only_the_cluster():
    assert parse_tf_config(json.dumps({"cluster": WORKERS})) == (WORKERS, None, None)
    text = json.dumps({"cluster": WORKERS, "task": {"type": "worker", "index": 1}})
    assert parse_tf_config(text) == (WORKERS, "worker", 1)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "TF_CONFIG is not JSON"),
        ("[]", "must be an object"),
        ('{"cluster": []}', "must be an object"),
        ('{"cluster": {}, "task": "worker"}', '"task" must be'),
        ('{"cluster": {}, "task": {"type": 1, "index": 0}}', '"task" must be'),
        ('{"cluster": {}, "task": {"type": "worker", "index": "0"}}', '"task" must be'),
    ],
)
def test_bad_tf_config_is_a_value_error(text, match):
    with pytest.raises(ValueError, match=match):
        parse_tf_config(text)


def test_json_errors_name_where_the_text_came_from():
    assert parse_json_spec('{"a": 1}', "--x") == {"a": 1}
    with pytest.raises(ValueError, match=r"--x is not JSON \(Expecting value at character 0\)"):
        parse_json_spec("nope", "--x")
