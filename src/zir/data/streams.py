"""A shard file as its uncompressed byte stream (gzip, bzip2, xz or plain), decoded in bounded reads.

Python's `gzip.open` (and tarfile's `r|gz`) raise EOFError for a stream cut short and drop what the
failing read had already decoded: for a small shard that is everything. `DecodedStream` instead delivers
every byte decoded before the damage, then ends and keeps the error in `damage`, so tarfile sees a short
archive and the caller reports the cause once. Each read decodes at most the bytes it returns, so a few
kilobytes of compressed zeros never become megabytes in memory.
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib

INPUT_CHUNK = 64 * 1024  # compressed bytes read from the file at a time
XZ_MEMORY_LIMIT = 128 * 2**20  # an xz shard whose decoder would need more is a damaged shard (LZMAError)
_DECODE_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)
READS_PAST_END = 64  # empty reads allowed once the stream has ended; a reader that keeps asking is skipping data


class ReadPastEnd(EOFError):
    """A reader kept reading after the stream ended: a header claimed more data than the shard holds.

    tarfile skips a member it is not asked to read (in `r|` mode) with one read per 10 KiB and never checks for
    the end, so a 9 KiB shard whose header claims 50 GiB would cost minutes of CPU, and a base-256 size forever."""


def _gzip_decoder():
    return zlib.decompressobj(16 + zlib.MAX_WBITS)  # 16 + MAX_WBITS: gzip header and trailer, CRC checked


def _xz_decoder():
    # the file names its window size; xz -9 needs 65 MiB to decode, a hostile header may ask for 1.5 GiB
    return lzma.LZMADecompressor(memlimit=XZ_MEMORY_LIMIT)


_DECODERS = {b"\x1f\x8b": _gzip_decoder, b"BZ": bz2.BZ2Decompressor, b"\xfd7": _xz_decoder}


class DecodedStream(io.RawIOBase):
    """Forward-only uncompressed bytes of a file; `damage` holds the decoding error that ended it early.

    Concatenated compressed streams (what `cat a.gz b.gz` makes) are read one after another and zero
    padding between them is passed over, as Python's gzip, bz2 and lzma readers do.
    """

    def __init__(self, path: str):
        super().__init__()
        self._file = open(path, "rb")
        self._new_decoder = _DECODERS.get(self._file.read(2))
        self._file.seek(0)
        self._decoder = self._new_decoder() if self._new_decoder else None
        self._pending = b""  # compressed input read from the file that the decoder has not taken
        self._empty_reads = 0
        self.damage: Exception | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._read(len(buffer))
        if not data and len(buffer):
            self._empty_reads += 1
            if self._empty_reads > READS_PAST_END:
                raise ReadPastEnd("a member claims more data than the stream holds")
        buffer[: len(data)] = data
        return len(data)

    def skip(self, size: int) -> int:
        """Pass over `size` bytes in bounded reads; the number passed over (less at the end of the stream)."""
        done = 0
        while done < size:
            got = self._read(min(size - done, INPUT_CHUNK))
            if not got:
                break
            done += len(got)
        return done

    def read_exactly(self, size: int) -> bytes:
        """`size` bytes, or EOFError when the stream ends first."""
        parts, got = [], 0
        while got < size:
            part = self._read(size - got)
            if not part:
                raise EOFError(f"stream ended {size - got} bytes short")
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def _read(self, size: int) -> bytes:
        if size <= 0 or self.damage is not None:
            return b""
        if self._decoder is None:
            return self._file.read(size)
        try:
            return self._decode(size)
        except _DECODE_ERRORS as e:
            self.damage = e  # everything decoded before is already delivered; the stream ends here
            return b""

    def _decode(self, size: int) -> bytes:
        while True:
            if self._decoder.eof and not self._next_stream():
                return b""
            if self._wants_input():
                chunk = self._file.read(INPUT_CHUNK)
                if not chunk:
                    raise EOFError("compressed stream ended before its end-of-stream marker")
                self._pending += chunk
            out = self._decoder.decompress(self._pending, size)
            self._pending = self._untaken()
            if out:
                return out

    def _wants_input(self) -> bool:
        if self._pending:
            return False
        # bz2 and lzma hold input back inside the decoder when the output cap is reached; zlib hands it back
        return getattr(self._decoder, "needs_input", True)

    def _untaken(self) -> bytes:
        """Input to give the decoder again: what the output cap held back (zlib), or what follows its stream."""
        if self._decoder.eof:
            return self._decoder.unused_data
        return getattr(self._decoder, "unconsumed_tail", b"")

    def _next_stream(self) -> bool:
        """After one compressed stream ends: start the next one, or False for a clean end (zero padding only)."""
        rest = self._pending.lstrip(b"\x00")
        while not rest:
            chunk = self._file.read(INPUT_CHUNK)
            if not chunk:
                self._pending = b""
                return False
            rest = chunk.lstrip(b"\x00")
        self._pending = rest
        self._decoder = self._new_decoder()
        return True

    def close(self) -> None:
        self._file.close()
        super().close()
