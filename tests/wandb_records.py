"""Read back what W&B wrote offline: its run-<id>.wandb file, a LevelDB-style log of
protobuf records (W&B's transaction log format), without a server."""

from __future__ import annotations

import json
import struct
from pathlib import Path

FILE_HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version
CHUNK_HEADER = struct.Struct("<IHB")  # checksum, length, type (1 full, 2 first, 3 middle, 4 last)
BLOCK = 32768


def wandb_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _ = FILE_HEADER.unpack_from(data)
    assert (ident, magic) == (b":W&B", 0xBEE1), path
    records, pending, at = [], b"", FILE_HEADER.size
    while at + CHUNK_HEADER.size <= len(data):
        if BLOCK - at % BLOCK < CHUNK_HEADER.size:  # a block's tail too short for a header: padding
            at += BLOCK - at % BLOCK
            continue
        _, length, kind = CHUNK_HEADER.unpack_from(data, at)
        at += CHUNK_HEADER.size
        pending += data[at : at + length]
        at += length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
        elif kind == 0:
            break
    return records


def wandb_history(run_file: Path) -> list[dict]:
    rows = []
    for record in wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":
            row = {"_step": record.history.step.num}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows
