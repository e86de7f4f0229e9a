"""Uploading an exported HF directory to the Hugging Face Hub, through huggingface_hub's own
client (HfApi.create_repo, then upload_folder as one commit). The token and endpoint are
huggingface_hub's: `HF_TOKEN` or `huggingface-cli login`, `HF_ENDPOINT`."""

import pathlib

from input_pipeline import errors


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
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError

    api = HfApi(endpoint=endpoint)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(directory), commit_message="Upload from jax-bert"
        )
    except (HfHubHTTPError, HFValidationError, LocalTokenNotFoundError, OSError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise errors.UserError(f"--push_to_hub={repo_id}: {first_line}") from None
    return commit.commit_url
