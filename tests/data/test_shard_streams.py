"""Shards cut or garbled, plain and compressed: every sample before the damage is kept, the damage is one skip,
and decompression stays bounded (zir.data.streams.DecodedStream under zir.data.shards.read_shard)."""

import bz2
import gzip
import io
import lzma
import random
import tarfile
import tracemalloc
import zlib

import pytest

from zir.data.shards import read_shard
from zir.data.sources import BadSample
from zir.data import streams
from zir.data.streams import DecodedStream

COMPRESSORS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}


def member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    return info, io.BytesIO(data)


def samples_tar(n: int = 3) -> tuple[bytes, list[int]]:
    """A tar of n samples s0.. (s.png of 700 random bytes, s.cls) and the offset where each member's data starts."""
    buf = io.BytesIO()
    starts = []
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(n):
            for name, data in ((f"s{i}.png", random.Random(i).randbytes(700)), (f"s{i}.cls", str(i).encode())):
                starts.append(buf.tell() + 512)
                tar.addfile(*member(name, data))
    return buf.getvalue(), starts


def summary(path) -> list:
    """Keys of the records read, and the reason of each BadSample, in order."""
    return [x.reason if isinstance(x, BadSample) else x["__key__"] for x in read_shard(str(path))]


def test_tar_cut_inside_a_member_keeps_the_samples_before_and_counts_one_error(tmp_path):
    whole, starts = samples_tar()
    (tmp_path / "a.tar").write_bytes(whole[: starts[4] + 100])  # 100 bytes into s2.png
    assert summary(tmp_path / "a.tar") == ["s0", "s1", "damaged shard (ReadError)"]


def test_sample_whose_second_member_is_cut_is_lost_with_the_damage(tmp_path):
    whole, starts = samples_tar()
    (tmp_path / "a.tar").write_bytes(whole[: starts[5]])  # s2.png complete, s2.cls header but no data
    assert summary(tmp_path / "a.tar") == ["s0", "s1", "damaged shard (ReadError)"]


@pytest.mark.parametrize("kind", COMPRESSORS)
def test_compressed_shard_cut_short_keeps_everything_decoded_before_the_cut(tmp_path, kind):
    whole, starts = samples_tar()
    keep = starts[4] + 100
    # the first part as one complete compressed stream, then a second stream cut after 20 bytes
    data = COMPRESSORS[kind](whole[:keep]) + COMPRESSORS[kind](whole[keep:])[:20]
    (tmp_path / f"a.tar.{kind}").write_bytes(data)
    assert summary(tmp_path / f"a.tar.{kind}") == ["s0", "s1", "damaged shard (EOFError)"]


def test_small_gzip_shard_cut_short_keeps_its_flushed_samples(tmp_path):
    whole, starts = samples_tar()
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    keep = starts[4] + 100
    data = z.compress(whole[:keep]) + z.flush(zlib.Z_FULL_FLUSH) + z.compress(whole[keep:])[:64]
    (tmp_path / "a.tar.gz").write_bytes(data)
    assert len(data) < 10240  # smaller than one tarfile read: gzip.open lost all of it
    assert summary(tmp_path / "a.tar.gz") == ["s0", "s1", "damaged shard (EOFError)"]


def test_gzip_garbled_in_the_middle(tmp_path):
    whole, starts = samples_tar()
    keep = starts[4]
    second = bytearray(gzip.compress(whole[keep:]))
    second[30:40] = b"\xff" * 10
    (tmp_path / "garbled.tar.gz").write_bytes(gzip.compress(whole[:keep]) + bytes(second))
    assert summary(tmp_path / "garbled.tar.gz") == ["s0", "s1", "damaged shard (zlib.error)"]


def test_concatenated_streams_and_zero_padding_read_as_one_shard(tmp_path):
    whole, starts = samples_tar()
    tail = tarfile.BLOCKSIZE * 2 * 10  # end-of-archive blocks and record padding
    data = gzip.compress(whole[: starts[2] - 512]) + b"\x00" * 100 + gzip.compress(whole[starts[2] - 512 :]) + bytes(tail)
    (tmp_path / "a.tar.gz").write_bytes(data)
    assert summary(tmp_path / "a.tar.gz") == ["s0", "s1", "s2"]


@pytest.mark.parametrize("kind", COMPRESSORS)
def test_each_read_decodes_only_what_it_returns(tmp_path, kind):
    path = tmp_path / f"zeros.{kind}"
    small_window = {"xz": lambda d: lzma.compress(d, preset=1)}  # xz -6 decodes through an 8 MiB window
    path.write_bytes(small_window.get(kind, COMPRESSORS[kind])(bytes(16 * 2**20)))  # 16 MiB of zeros, KiBs on disk
    tracemalloc.start()
    try:
        with DecodedStream(str(path)) as stream:
            first = stream.read(10240)
            passed = stream.skip(2**30)
            damage = stream.damage
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (len(first), passed, damage) == (10240, 16 * 2**20 - 10240, None)
    assert peak < 2 * 2**20


def test_xz_shard_asking_for_more_decoder_memory_than_the_limit_is_damaged(tmp_path, monkeypatch):
    whole, _ = samples_tar()
    (tmp_path / "a.tar.xz").write_bytes(lzma.compress(whole))  # preset 6: an 8 MiB window, 9 MiB to decode
    assert summary(tmp_path / "a.tar.xz") == ["s0", "s1", "s2"]
    monkeypatch.setattr(streams, "XZ_MEMORY_LIMIT", 2**20)
    assert summary(tmp_path / "a.tar.xz") == ["damaged shard (LZMAError)"]
