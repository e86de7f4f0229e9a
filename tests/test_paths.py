"""`hf://` through the path layer: the Hub's Parquet files, globbed and streamed by
huggingface_hub's own `HfFileSystem` from a local stand-in of the Hub (tests/hub_server.py),
prepare into the same records as local copies of the same files."""

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from input_pipeline import prepare
from tests.hub_server import HubServer
from tests.test_pretrain_job import ROOT

PREPARE = """
import sys
from input_pipeline import prepare
from util import paths
paths.use_fsspec_backend()
prepare.prepare([sys.argv[1]], sys.argv[2], "parquet", sys.argv[3], num_shards=2, workers=0)
"""


def _parquet(documents: list[str]) -> bytes:
    sink = pa.BufferOutputStream()
    table = pa.table({"id": list(range(len(documents))), "text": documents})
    pq.write_table(table, sink, row_group_size=3)
    return sink.getvalue().to_pybytes()


def _hub_environment(home, endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    return env | {"HF_HOME": str(home), "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0"}


def test_hub_parquet_prepares_into_the_same_records_as_local_copies(shared_data, tmp_path):
    wiki = (shared_data / "wikipedia" / "AA" / "wiki_00").read_text(encoding="utf-8")
    articles = [a.split(">", 1)[1].strip() for a in wiki.split("</doc>") if ">" in a][:20]
    files = {f"20231101.en/train-0000{i}-of-00002.parquet": _parquet(articles[i::2])
             for i in range(2)}  # fmt: skip
    files["20231101.fr/train-00000-of-00001.parquet"] = _parquet(["Un article."])
    for name, data in files.items():
        (tmp_path / "local" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "local" / name).write_bytes(data)
    vocab = shared_data / "vocab" / "bert-base-uncased-vocab.txt"
    remote = tmp_path / "from_hub"
    with HubServer() as server:
        server.add_repo("wikimedia/wikipedia", files, repo_type="dataset")
        pattern = "hf://datasets/wikimedia/wikipedia/20231101.en/train-*.parquet"
        done = subprocess.run(
            [sys.executable, "-c", PREPARE, pattern, str(remote), str(vocab)],
            cwd=ROOT, env=_hub_environment(tmp_path / "hf_home", server.endpoint),
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    local = prepare.prepare(
        [str(tmp_path / "local" / "20231101.en" / "train-*.parquet")],
        tmp_path / "from_disk", "parquet", vocab, num_shards=2, workers=0,
    )  # fmt: skip
    manifest = json.loads((remote / "manifest.json").read_text())
    assert [i["path"] for i in manifest["inputs"]] == [
        f"hf://datasets/wikimedia/wikipedia/20231101.en/train-0000{i}-of-00002.parquet"
        for i in range(2)
    ]
    assert manifest["counts"] == local.counts and manifest["counts"]["documents"] == 20
    for shard in local.shards:
        assert (remote / shard["name"]).read_bytes() == (
            local.directory / shard["name"]
        ).read_bytes()
    assert not (tmp_path / "hf_home" / "hub").exists()  # streamed, not copied into the cache
