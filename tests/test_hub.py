"""The Hugging Face Hub without a network: Hub model ids for `init_from` and tokenizers, `hf://`
files through HfFileSystem, and the default corpus offline.

The Hub is `tests/hub_server.py` on 127.0.0.1, spoken to by the real huggingface_hub code.
huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it is imported, so the steps
that go through those variables run in a fresh Python process with them set, as a user's would;
checks that need no download run here, against the cache those processes filled.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import reference
import transformers
from flax import traverse_util
from hub_server import HubServer
from huggingface_hub import constants
from huggingface_hub.utils import reset_sessions

from bert import pretrained
from bert.heads import BertForPreTraining
from bert.training import checkpoints as training_checkpoints
from bert.training import runner
from configs import bert_base
from input_pipeline import corpora, data_setup, tokenizers
from util import hub
from util.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
REPO = "org/tiny-bert"
TOKENIZER_FILES = {"vocab.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json"}  # fmt: skip
# Files a Hub repository often holds besides what the loader reads; never to be downloaded.
DECOYS = {name: b"not read" for name in ("pytorch_model.bin", "tf_model.h5", "onnx/model.onnx",
                                         "onnx/spiece.model", "README.md")}  # fmt: skip
TEXT = "The quick brown fox jumps over the lazy dog, then naps."

# Loads `argv[1]` (tokenizer `argv[3]`) with bert/pretrained.py; saves the parameters to argv[2].
LOAD = """
import sys
import numpy as np
from flax import traverse_util
from bert import pretrained
model = pretrained.load(sys.argv[1], sys.argv[3] if len(sys.argv) > 3 else "")
flat = traverse_util.flatten_dict(model.params, sep="/")
np.savez(sys.argv[2], **{k: np.asarray(v) for k, v in flat.items()})
print(model.tokenizer.path)
"""


def _vocab() -> list[str]:
    """99 WordPiece tokens (the odd_vocab reference config's vocabulary size)."""
    words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "then", "naps", "an"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", *words, *letters]
    tokens += [f"##{c}" for c in letters]
    return tokens + [f"[unused{i}]" for i in range(99 - len(tokens))]


def _checkpoint(directory: pathlib.Path, seed: int) -> transformers.BertForPreTraining:
    """A random HF BERT with its tokenizer, saved by transformers into `directory`."""
    model = reference.hf_model("odd_vocab", seed=seed)
    model.save_pretrained(directory)
    (directory / "vocab.list").write_text("\n".join(_vocab()) + "\n")
    tokenizer = transformers.BertTokenizerFast(str(directory / "vocab.list"), do_lower_case=True)
    (directory / "vocab.list").unlink()
    tokenizer.save_pretrained(directory)
    return model


def _env(home: pathlib.Path, endpoint: str, offline: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.pop("TRANSFORMERS_OFFLINE", None)
    env |= {"HF_HOME": str(home), "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": str(int(offline))}
    return env | {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def _python(code: str, env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _flat(params) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


@pytest.fixture(autouse=True)
def _fresh_hub_sessions():
    """huggingface_hub keeps one HTTP session per thread, built with the offline mode of its
    time; tests that switch the mode (here or in another module) must not share one."""
    reset_sessions()
    yield
    reset_sessions()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The fixture Hub serving REPO (main: seed 1; tag v1: seed 2) and a tokenizer-only repo;
    yields (server, {revision: (directory, model)})."""
    root = tmp_path_factory.mktemp("hub")
    checkpoints = {}
    with HubServer() as server:
        for revision, seed in (("main", 1), ("v1", 2)):
            directory = root / revision
            model = _checkpoint(directory, seed)
            server.add_repo(REPO, HubServer.files_of(directory) | DECOYS, revision=revision)
            checkpoints[revision] = (directory, model)
        tokenizer_files = {n: (root / "main" / n).read_bytes() for n in TOKENIZER_FILES}
        server.add_repo("org/tokenizer-only", tokenizer_files | {"model.safetensors": b"x"})
        weights = {
            n: (root / "main" / n).read_bytes() for n in ("config.json", "model.safetensors")
        }
        server.add_repo("org/weights-only", weights)
        yield server, checkpoints


@pytest.fixture(scope="module")
def hub_home(served, tmp_path_factory):
    """HF_HOME after one online load of REPO, REPO@v1 and the tokenizer-only repo, each in a
    fresh process; returns (home, {spec: saved parameters}, {spec: tokenizer path})."""
    server, _ = served
    home = tmp_path_factory.mktemp("hf_home")
    out = tmp_path_factory.mktemp("loaded")
    env = _env(home, server.endpoint, offline=False)
    saved, tokenizer_paths = {}, {}
    for spec in (REPO, f"{REPO}@v1"):
        server.requests.clear()
        done = _python(LOAD, env, spec, out / f"{len(saved)}.npz")
        assert done.returncode == 0, done.stderr[-3000:]
        assert server.asked_for() == {"config.json", "model.safetensors"} | TOKENIZER_FILES
        saved[spec] = dict(np.load(out / f"{len(saved)}.npz"))
        tokenizer_paths[spec] = done.stdout.strip()
    return home, saved, tokenizer_paths


def test_hub_id_loads_the_same_parameters_and_logits_as_the_directory(served, hub_home):
    server, checkpoints = served
    _, saved, tokenizer_paths = hub_home
    for spec, revision in ((REPO, "main"), (f"{REPO}@v1", "v1")):
        directory, model = checkpoints[revision]
        local = pretrained.load(str(directory))
        expected = _flat(local.params)
        assert sorted(saved[spec]) == sorted(expected)
        for name, value in expected.items():
            np.testing.assert_array_equal(saved[spec][name], value, err_msg=f"{spec} {name}")
        inputs = reference.batch(reference.CONFIGS["odd_vocab"], seed=6)
        params = traverse_util.unflatten_dict(saved[spec], sep="/")
        out = BertForPreTraining(local.config).apply(
            {"params": params}, inputs["input_ids"], inputs["token_type_ids"],
            inputs["attention_mask"],
        )  # fmt: skip
        want = reference.hf_forward(model, inputs)
        for key in ("mlm_logits", "nsp_logits"):
            np.testing.assert_allclose(np.asarray(out[key]), want[key], atol=1e-5, rtol=0)
        assert "/hub/models--org--tiny-bert/snapshots/" in tokenizer_paths[spec]
    main_params, v1_params = saved[REPO], saved[f"{REPO}@v1"]
    assert any(not np.array_equal(main_params[k], v1_params[k]) for k in main_params)


def test_only_config_weights_and_tokenizer_are_in_the_cache(hub_home):
    home, _, _ = hub_home
    snapshots = sorted((home / "hub" / "models--org--tiny-bert" / "snapshots").iterdir())
    assert len(snapshots) == 2  # main and v1
    for snapshot in snapshots:
        names = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}
        assert names == {"config.json", "model.safetensors"} | TOKENIZER_FILES


def test_second_load_with_hf_hub_offline_uses_the_cache(served, hub_home, tmp_path):
    server, _ = served
    home, saved, _ = hub_home
    server.requests.clear()
    env = _env(home, server.endpoint, offline=True)
    for spec in (REPO, f"{REPO}@v1"):
        done = _python(LOAD, env, spec, tmp_path / "offline.npz")
        assert done.returncode == 0, done.stderr[-3000:]
        again = dict(np.load(tmp_path / "offline.npz"))
        assert all(np.array_equal(again[k], saved[spec][k]) for k in saved[spec])
    assert server.requests == []  # nothing asked of the Hub


def test_offline_without_cache_is_one_user_error_line(served, tmp_path):
    server, _ = served
    env = _env(tmp_path / "empty_home", server.endpoint, offline=True)
    code = "from bert import pretrained\npretrained.load('org/tiny-bert')"
    done = _python(code, env)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("util.errors.UserError: init_from='org/tiny-bert': ")
    assert "no such local path, and as a Hub model id it is not in the Hugging Face cache" in last
    assert last.endswith("while HF_HUB_OFFLINE is set; run once with network access, or give a "
                         "local path")  # fmt: skip
    assert server.requests == [] or all("tiny-bert" not in p for _, p in server.requests)


def test_unreachable_hub_falls_back_to_the_cache(hub_home, monkeypatch):
    home, saved, _ = hub_home
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    loaded = _flat(pretrained.load(f"{REPO}@v1").params)
    assert all(np.array_equal(loaded[k], saved[f"{REPO}@v1"][k]) for k in saved[f"{REPO}@v1"])
    with pytest.raises(UserError, match=r"not in the Hugging Face cache .* while the Hub at http"):
        pretrained.load("org/never-fetched")


def test_tokenizer_as_hub_id_gives_transformers_ids(served, tmp_path):
    server, checkpoints = served
    directory, _ = checkpoints["main"]
    home = tmp_path / "home"
    server.requests.clear()
    code = ("import sys\nfrom input_pipeline import tokenizers\nfrom util import hub\n"
            "path = hub.local_path(sys.argv[1], 'tokenizer', tokenizer_only=True)\n"
            "print(tokenizers.load_tokenizer(path).path)")  # fmt: skip
    done = _python(code, _env(home, server.endpoint, offline=False), "org/tokenizer-only")
    assert done.returncode == 0, done.stderr[-3000:]
    assert server.asked_for() == TOKENIZER_FILES  # not model.safetensors
    ours = tokenizers.load_tokenizer(done.stdout.strip())
    theirs = transformers.AutoTokenizer.from_pretrained(directory)
    assert ours.encode_ids(TEXT) == theirs(TEXT, add_special_tokens=False)["input_ids"]
    assert ours.vocab_size == theirs.vocab_size == 99


def test_pretraining_data_with_a_hub_tokenizer_equals_the_local_one(
    served, hub_home, tmp_path, monkeypatch
):
    """data.tokenizer as a Hub id (here from the cache, offline) prepares the same records as
    the same tokenizer given as a local folder."""
    _, checkpoints = served
    home, _, _ = hub_home
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(("The quick brown fox.\nThen naps.\n\nA lazy dog jumps over.\n\n") * 40)
    prepared = {}
    for name, tokenizer in (("hub", REPO), ("local", str(checkpoints["main"][0]))):
        config = bert_base.get_config("size=tiny")
        config.data.input, config.data.format = str(corpus), "text"
        config.data.tokenizer, config.data.num_shards = tokenizer, 2
        data = data_setup.prepare_pretraining_data(config.data, tmp_path / name)
        assert data.tokenizer.path.suffix == ".json"  # the link in the cache, not its blob
        prepared[name] = [pathlib.Path(f).read_bytes() for f in data.train_files + data.eval_files]
    assert prepared["hub"] == prepared["local"]
    assert len(prepared["hub"]) == 2 and all(prepared["hub"])


def test_a_workdir_records_a_hub_tokenizer_as_its_id_and_commit(
    served, hub_home, tmp_path, monkeypatch
):
    """A run whose tokenizer came from the Hub records `org/name@commit`, not this machine's
    cache path; loading the workdir with another cache fetches that commit's tokenizer."""
    server, checkpoints = served
    home, _, _ = hub_home
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    cached = str(tokenizers.load_tokenizer(hub.local_path(REPO, "t", tokenizer_only=True)).path)
    commit = pathlib.Path(cached).parent.name
    assert runner.recorded_tokenizer(cached, tmp_path) == f"{REPO}@{commit}"
    assert hub.model_id_of(str(checkpoints["main"][0] / "tokenizer.json")) is None
    local = pretrained.load(str(checkpoints["main"][0]))
    workdir = tmp_path / "run"
    ckpts = training_checkpoints.Checkpoints(workdir, max_to_keep=1, async_save=False)
    meta = {"step": 1, "model": dataclasses.asdict(local.config),
            "tokenizer": runner.recorded_tokenizer(cached, workdir)}  # fmt: skip
    ckpts.save(1, {"params": local.params}, meta)
    ckpts.wait()
    ckpts.close()
    server.requests.clear()  # another machine: an empty cache, the Hub reachable
    done = _python(LOAD, _env(tmp_path / "home", server.endpoint, offline=False), workdir,
                   tmp_path / "params.npz")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert server.asked_for() == TOKENIZER_FILES and commit in done.stdout
    assert done.stdout.strip().startswith(str(tmp_path / "home"))
    fetched = tokenizers.load_tokenizer(done.stdout.strip())
    assert fetched.encode_ids(TEXT) == local.tokenizer.encode_ids(TEXT)


def test_hub_errors_name_the_field(served, tmp_path, monkeypatch):
    server, checkpoints = served
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match=r"init_from='org/absent': no such local path, and no mo"):
        pretrained.load("org/absent")
    with pytest.raises(UserError, match=r"init_from='org/tiny-bert@v9': .* has no revision 'v9'"):
        pretrained.load("org/tiny-bert@v9")
    with pytest.raises(UserError, match=r"tokenizer='org/weights-only': the Hub repository hol"):
        pretrained.load(str(checkpoints["main"][0]), "org/weights-only")
    with pytest.raises(UserError, match=r"nope/ckpt: checkpoint directory not found \(nor a Hub"):
        pretrained.load(str(tmp_path / "nope" / "ckpt"))


def test_model_id_shapes_follow_huggingface_hub():
    assert hub.parse_model_id("google-bert/bert-base-uncased") == (
        "google-bert/bert-base-uncased", None)  # fmt: skip
    assert hub.parse_model_id("org/name@refs/pr/1") == ("org/name", "refs/pr/1")
    not_ids = ("runs/base/x", "gs://bucket/run", "hf://org/name", "vocab.txt", "./org/name",
               "/org/name", "org/name@", "org/na--me", "org/.name")  # fmt: skip
    for not_an_id in not_ids:
        assert hub.parse_model_id(not_an_id) is None, not_an_id


def test_local_path_of_hub_shape_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert hub.local_path("org/name", "init_from") == "org/name"  # no Hub call: offline here


def test_a_mistyped_path_beside_its_folder_is_missing_not_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "mini").mkdir(parents=True)
    assert not hub.is_model_id("runs/mnii") and hub.is_model_id("org/name")
    with pytest.raises(UserError, match="^runs/mnii: checkpoint directory not found"):
        pretrained.load("runs/mnii")


def test_convert_takes_a_hub_model_id(served, hub_home, tmp_path):
    """`python -m bert.convert org/name DST` converts the Hub model (here from the cache, as
    offline): DST loads the directory's parameters."""
    server, checkpoints = served
    home, _, _ = hub_home
    code = "import sys; from bert.export import cli; sys.exit(cli.main(sys.argv[1:]))"
    env = _env(home, server.endpoint, offline=True)
    done = _python(code, env, REPO, tmp_path / "out", "--to=hf")
    assert done.returncode == 0, done.stderr[-3000:]
    got = _flat(pretrained.load(str(tmp_path / "out")).params)
    want = _flat(pretrained.load(str(checkpoints["main"][0])).params)
    assert sorted(got) == sorted(want)
    assert all(np.array_equal(got[k], want[k]) for k in want)


# ---------------------------------------------------------------------------------------------
# hf:// files and the default corpus


def _parquet(rows: list[str]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"id": list(range(len(rows))), "text": rows}), sink,
                   row_group_size=2)  # fmt: skip
    return sink.getvalue().to_pybytes()


# Globs the default corpus through HfFileSystem, reads each file whole, and reads its text
# column with the project's parquet reader (one row group at a time) over ranged reads.
READ_HF = """
import hashlib, json, os, sys
import fsspec
from input_pipeline import corpora, parquet_text
files = fsspec.open_files(sys.argv[1], "rb")
out = []
for f in files:
    with f as stream:
        data = stream.read()
    with fsspec.open("hf://" + f.path, "rb", block_size=256) as stream:
        text = list(parquet_text.texts(stream, f.path, "text", "strict", corpora.CorpusStats()))
    out.append({"path": f.path, "sha256": hashlib.sha256(data).hexdigest(), "text": text})
print(json.dumps(out), flush=True)
# Once in CI this process aborted after printing ("terminate called without an active
# exception": a native thread torn down at interpreter exit), with its result complete; what
# is tested here is the result, so leave without the teardown.
os._exit(0)
"""


def test_default_corpus_globs_and_reads_through_hffilesystem(tmp_path):
    pattern = bert_base.get_config().data.input
    assert pattern == "hf://datasets/wikimedia/wikipedia/20231101.en/train-*.parquet"
    rows = [[f"Article {i}, paragraph {j}.\nSecond line." for j in range(5)] for i in range(2)]
    files = {f"20231101.en/train-0000{i}-of-00002.parquet": _parquet(r) for i, r in
             enumerate(rows)}  # fmt: skip
    files["20231101.fr/train-00000-of-00001.parquet"] = _parquet(["Un article."])
    files["README.md"] = b"# wikipedia"
    with HubServer() as server:
        server.add_repo("wikimedia/wikipedia", files, repo_type="dataset")
        done = _python(READ_HF, _env(tmp_path, server.endpoint, offline=False), pattern)
        ranged = [p for m, p in server.requests if m == "GET" and "/resolve/" in p]
    assert done.returncode == 0, done.stderr[-3000:]
    read = json.loads(done.stdout)
    english = sorted(n for n in files if n.startswith("20231101.en/"))
    assert [r["path"] for r in read] == [f"datasets/wikimedia/wikipedia/{n}" for n in english]
    for entry, name, text in zip(read, english, rows, strict=True):
        assert entry["sha256"] == hashlib.sha256(files[name]).hexdigest()
        assert entry["text"] == text
    assert len(ranged) > len(english)  # the second reads came in ranges, not whole files
    assert not (tmp_path / "hub").exists()  # streamed: nothing copied into the cache


# Prepares hf:// files (argv[1]) with the tokenizer argv[2] into the workdir argv[3].
PREPARE_HF = """
import pathlib, sys
from configs import bert_base
from input_pipeline import data_setup
config = bert_base.get_config("size=tiny")
config.data.input, config.data.tokenizer, config.data.num_shards = sys.argv[1], sys.argv[2], 2
data = data_setup.prepare_pretraining_data(config.data, pathlib.Path(sys.argv[3]))
print(len(data.train_files), len(data.eval_files))
"""


def test_a_run_prepared_from_hub_files_resumes_offline(shared_data, tmp_path, monkeypatch):
    """hf:// input prepared while the Hub was reachable is used as prepared when it is not (a
    resumed run on a machine without network); damaged shards, or no preparation from those
    files, still fail with what to pass."""
    pattern = "hf://datasets/org/corpus/train-*.parquet"
    rows = [[f"Article {i}, paragraph {j}.\nSecond line." for j in range(5)] for i in range(2)]
    files = {f"train-0000{i}-of-00002.parquet": _parquet(r) for i, r in enumerate(rows)}
    vocab = str(shared_data / "vocab" / "bert-base-uncased-vocab.txt")
    with HubServer() as server:
        server.add_repo("org/corpus", files, repo_type="dataset")
        env = _env(tmp_path / "home", server.endpoint, offline=False)
        done = _python(PREPARE_HF, env, pattern, vocab, tmp_path / "run")
    assert done.returncode == 0, done.stderr[-3000:]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    config = bert_base.get_config("size=tiny")
    config.data.input, config.data.tokenizer, config.data.num_shards = pattern, vocab, 2
    data = data_setup.prepare_pretraining_data(config.data, tmp_path / "run")
    assert len(data.train_files) == 1 and len(data.eval_files) == 1
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set"):  # other files named
        config.data.input = "hf://datasets/org/corpus/test-*.parquet"
        data_setup.prepare_pretraining_data(config.data, tmp_path / "run")
    config.data.input = pattern
    pathlib.Path(data.train_files[0]).write_bytes(b"damaged")
    with pytest.raises(UserError, match=r"1 of 2 shards damaged .* Hub cannot be reached"):
        data_setup.prepare_pretraining_data(config.data, tmp_path / "run")


def test_default_corpus_offline_fails_first_with_what_to_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError) as raised:
        data_setup.prepare_pretraining_data(bert_base.get_config().data, tmp_path / "run")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("config.data.input='hf://datasets/wikimedia/wikipedia/")
    assert "HF_HUB_OFFLINE is set" in message
    assert message.endswith(data_setup.LOCAL_INSTEAD)
    for name in corpora.FORMATS:  # the hint names every format, each with what it reads
        assert f"{name} (" in message or f"{name} or " in message, name
    assert not (tmp_path / "run").exists()  # before any work


def test_default_corpus_without_network_fails_first_with_what_to_pass(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(UserError) as raised:
        data_setup.prepare_pretraining_data(bert_base.get_config().data, tmp_path / "run")
    message = str(raised.value)
    assert "\n" not in message and "cannot be reached" in message
    assert message.endswith(data_setup.LOCAL_INSTEAD)
    assert not (tmp_path / "run").exists()


@pytest.mark.full
def test_main_command_offline_stops_before_any_work(tmp_path):
    """The README's first command, offline: the error names what to pass, and no workdir."""
    env = _env(tmp_path / "home", "http://127.0.0.1:9", offline=True)
    command = [sys.executable, "main.py", "--config=configs/bert_base.py",
               f"--workdir={tmp_path / 'run'}"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert ("config.data.input='hf://datasets/wikimedia/wikipedia/20231101.en/train-*.parquet' "
            "is on the Hugging Face Hub, but HF_HUB_OFFLINE is set. " + data_setup.LOCAL_INSTEAD
            ) in done.stderr  # fmt: skip
    assert not (tmp_path / "run").exists()
