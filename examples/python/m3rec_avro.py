"""m3rec_avro - Avro single-object encoding for m3rec's messages with fastavro:
C3 01, the CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form (8 bytes,
little-endian), then the schemaless Avro datum (docs/contract.md, "Encoding")."""
import io
import os
import struct

import fastavro
from fastavro.schema import load_schema, to_parsing_canonical_form

SCHEMAS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "schemas")


def crc64_avro(data: bytes) -> int:
    """The Rabin fingerprint of the Avro specification ("CRC-64-AVRO")."""
    fp = 0xC15D213AA4D7A795
    for b in data:
        fp ^= b
        for _ in range(8):
            fp = (fp >> 1) ^ (0xC15D213AA4D7A795 & -(fp & 1))
    return fp


class Codec:
    """One record type: encode(dict) -> message bytes, decode(bytes) -> dict (ValueError if not one)."""

    def __init__(self, name: str):
        self.schema = fastavro.parse_schema(load_schema(os.path.join(SCHEMAS, name + ".avsc")))
        pcf = to_parsing_canonical_form(self.schema)
        self.header = b"\xc3\x01" + struct.pack("<Q", crc64_avro(pcf.encode()))

    def encode(self, record: dict) -> bytes:
        out = io.BytesIO()
        out.write(self.header)
        fastavro.schemaless_writer(out, self.schema, record)
        return out.getvalue()

    def decode(self, message: bytes) -> dict:
        if message[:10] != self.header:
            raise ValueError(f"not a {self.schema['name']}: header {message[:10].hex()}")
        buf = io.BytesIO(message[10:])
        record = fastavro.schemaless_reader(buf, self.schema, None)
        if buf.tell() != len(message) - 10:
            raise ValueError(f"{len(message) - 10 - buf.tell()} trailing bytes")
        return record
