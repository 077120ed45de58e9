"""Kafka's default partitioner, a batch at a time: the same hash and partition as aiokafka's."""

from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.partitioning import key_partitions, murmur2_many


def test_murmur2_of_known_keys_matches_the_java_clients_values():
    # Values of org.apache.kafka.common.utils.Utils.murmur2 (Kafka's UtilsTest)
    assert murmur2_many([b"21", b"foobar", b"a-little-bit-long-string", b""]).tolist() == [
        murmur2(b"21"),
        murmur2(b"foobar"),
        murmur2(b"a-little-bit-long-string"),
        murmur2(b""),
    ]
    assert murmur2_many([b"21"]).tolist() == [-973932308 & 0xFFFFFFFF]
    assert murmur2_many([b"foobar"]).tolist() == [-790332482 & 0xFFFFFFFF]


@settings(max_examples=300, deadline=None)
@given(keys=st.lists(st.binary(max_size=40), max_size=40))
def test_murmur2_many_equals_aiokafkas_murmur2_for_every_key(keys):
    assert murmur2_many(keys).tolist() == [murmur2(key) for key in keys]


@settings(max_examples=200, deadline=None)
@given(
    keys=st.lists(st.binary(min_size=1, max_size=24), max_size=30),
    count=st.integers(1, 12),
)
def test_key_partitions_are_the_ones_aiokafkas_send_picks(keys, count):
    partitions = list(range(count))
    expected = [DefaultPartitioner()(key, partitions, partitions) for key in keys]
    assert key_partitions(keys, partitions) == expected
