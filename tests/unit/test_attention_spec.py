"""The attention built-in's spec: the same data, split and tokenizer settings as the GRU model it is measured
against."""

from __future__ import annotations

from edgemaas.spec import load_spec
from tests.conftest import MODELS


def test_attention_spec_reads_the_gru_models_data_and_split() -> None:
    attention, gru = load_spec(MODELS / "attention.yaml"), load_spec(MODELS / "nlp.yaml")
    assert attention.model.architecture == "attention" and gru.model.architecture == "nlp"
    # Same generated commands, same held-out split (seeded), same vocabulary cap and sequence length.
    assert attention.data == gru.data
    assert attention.train.seed == gru.train.seed
    assert attention.model.params["vocabulary_size"] == gru.model.params["vocabulary_size"]
    assert attention.model.params["embedding_dim"] % attention.model.params["heads"] == 0
    assert attention.gate.max_metric_drop == gru.gate.max_metric_drop
