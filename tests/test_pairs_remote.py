"""Pair files on `gs://` (a GCS emulator, see tests/test_gcs.py) read as the local copies."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from bert.tasks import pairs
from tests.test_gcs import BUCKET, emulator, gcs  # noqa: F401 (fixtures)
from util import paths


def test_pairs_from_gcs_equal_local(gcs, tmp_path):  # noqa: F811
    paths.use_fsspec_backend()
    rows = {"anchor": ["a1", "a2", "a3"], "positive": ["p1", "p2", "p3"], "score": [1.0, 2, 3]}
    pq.write_table(pa.table(rows), tmp_path / "part-0.parquet", row_group_size=2)
    with open(tmp_path / "part-1.jsonl", "w") as f:
        f.write(json.dumps({"anchor": "a4", "positive": "p4", "score": 4}) + "\n")
    for name in ("part-0.parquet", "part-1.jsonl"):
        gcs.put(str(tmp_path / name), f"{BUCKET}/pairs/{name}")
    columns = "anchor,positive,score"
    remote = pairs.read_pairs(f"gs://{BUCKET}/pairs/part-*", kind="scored", columns=columns)
    local = pairs.read_pairs(str(tmp_path / "part-*"), kind="scored", columns=columns)
    assert remote == local
    assert remote.anchors == ("a1", "a2", "a3", "a4") and remote.scores == (1, 2, 3, 4)
