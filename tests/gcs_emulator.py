"""A GCS emulator on 127.0.0.1 for the `gs://` tests: gcp-storage-emulator, in memory, with
one bucket, run as `python -m tests.gcs_emulator PORT BUCKET` until terminated.

One gap of the emulator is filled: real GCS sends an object's generation with its content
(the `x-goog-generation` header), which TensorStore (Orbax's array writer) reads to update an
object conditionally; the emulator leaves it out.
"""

import sys

from gcp_storage_emulator.handlers import objects

_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
    try:
        found = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except Exception:  # noqa: BLE001 (not found: the emulator's own handler answers 404)
        found = None
    if found is not None:
        response["x-goog-generation"] = str(found["generation"])
        response["x-goog-metageneration"] = str(found["metageneration"])
    return _download(request, response, storage, *args, **kwargs)


def main(port: int, bucket: str) -> None:
    objects.download = _download_with_generation  # before the server builds its routes
    from gcp_storage_emulator.server import create_server  # noqa: PLC0415

    create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).run()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
