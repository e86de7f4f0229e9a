"""Uploading an exported HF directory to the Hugging Face Hub, through huggingface_hub's own
client (HfApi.create_repo, then upload_folder as one commit). The token and endpoint are
huggingface_hub's: `HF_TOKEN` or `huggingface-cli login`, `HF_ENDPOINT`."""

import pathlib

from input_pipeline import errors


def check_repo_id(repo_id: str) -> None:
    """Raises UserError unless `repo_id` is a valid Hub repository id ("org/name")."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise errors.UserError(f"--push_to_hub={repo_id}: {_first_line(e)}") from None


def push_to_hub(
    directory: str | pathlib.Path,
    repo_id: str,
    private: bool = False,
    endpoint: str | None = None,
) -> str:
    """Creates the model repository `repo_id` if needed and uploads `directory` into it.

    Args:
      directory: an HF directory (e.g. written by bert.convert).
      repo_id: "org/name" on the Hub.
      private: create the repository private (an existing one is left as it is).
      endpoint: the Hub's address; None: huggingface_hub's (HF_ENDPOINT or huggingface.co).

    Returns:
      The URL of the commit.

    Raises:
      UserError: an invalid repository id, no token, no network, or a refusal by the Hub.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalTokenNotFoundError,
        OfflineModeIsEnabled,
    )

    api = HfApi(endpoint=endpoint)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(directory), commit_message="Upload from jax-bert"
        )
    except (HfHubHTTPError, HFValidationError, LocalTokenNotFoundError, OfflineModeIsEnabled) as e:
        raise errors.UserError(f"--push_to_hub={repo_id}: {_first_line(e)}") from None
    except OSError as e:  # connection refused, name not resolved, time-out
        raise errors.UserError(
            f"--push_to_hub={repo_id}: cannot reach the Hub at {api.endpoint} "
            f"({type(e).__name__}); check the network, or HF_ENDPOINT"
        ) from None
    return commit.commit_url


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
