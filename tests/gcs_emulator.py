"""A GCS emulator on 127.0.0.1 for the `gs://` tests: gcp-storage-emulator, in memory, with
one bucket, run as `python -m tests.gcs_emulator PORT BUCKET` until terminated.

Two gaps of the emulator are filled, as real GCS behaves: an object's content comes with its
generation (the `x-goog-generation` header), which TensorStore (Orbax's array writer) reads to
update an object conditionally; and a resumable upload can be cancelled (DELETE on its
session, answered 499), which gcsfs does when a write is abandoned. The abandoned upload
never becomes an object either way.
"""

import sys
import types

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


def _cancel_upload(request, response, storage, *args, **kwargs):
    # What GCS answers to a cancelled resumable upload (not an http.HTTPStatus member).
    response.status = types.SimpleNamespace(value=499, phrase="Client Closed Request")


def main(port: int, bucket: str) -> None:
    objects.download = _download_with_generation  # before the server builds its routes
    from gcp_storage_emulator import server, settings  # noqa: PLC0415

    upload = rf"^{settings.UPLOAD_API_ENDPOINT}/b/(?P<bucket_name>[-.\w]+)/o$"
    for regex, handlers in server.HANDLERS:
        if regex == upload:
            handlers[server.DELETE] = _cancel_upload
    create_server = server.create_server

    create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).run()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
