"""Trust comes only from the person running optkit, per invocation: `--allow-pickle` (weights stored as pickle,
which can run code when unpickled) and `--trust-remote-code` (a model's own Python from its folder or the hub).
No file can grant it: a recipe that sets it is refused, an artifact's optkit.json only records what trust its
source needed (`needs`), and loading it without those flags stops with one line naming them.

The flags travel from the command line through the plan to each worker's job; nothing reads them back from the
run folder or an artifact."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from optkit.errors import BadInput

FLAGS = {"allow_pickle": "--allow-pickle", "trust_remote_code": "--trust-remote-code"}
WHY = {"allow_pickle": "pickle weights (.bin/.pt), which can run code when loaded",
       "trust_remote_code": "custom model code (auto_map in its config), which runs when loaded"}


class Trust(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_pickle: bool = False
    trust_remote_code: bool = False

    def given(self) -> list[str]:
        return [name for name in FLAGS if getattr(self, name)]


def needed_by(location: str, kind: str, trust: Trust) -> list[str]:
    """What trust loading `location` takes: pickle weights with no safetensors beside them, a config naming its
    own code. A hub id cannot be looked into before it is fetched: what the caller granted is what it needed."""
    if kind == "hub":
        return trust.given()
    folder = Path(location)
    if not folder.is_dir():
        return []
    needs = []
    if not any(folder.glob("*.safetensors")) and (any(folder.glob("*.bin")) or any(folder.glob("*.pt"))):
        needs.append("allow_pickle")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = None
    if isinstance(config, dict) and config.get("auto_map"):
        needs.append("trust_remote_code")
    return needs


def require(needs: list, trust: Trust, what: str) -> None:
    """BadInput unless every trust in `needs` was granted on the command line."""
    unknown = [n for n in needs if n not in FLAGS]
    if unknown:
        raise BadInput(f"{what} needs {', '.join(map(str, unknown))}, which optkit does not know; re-create it with "
                       "this optkit")
    missing = [n for n in needs if not getattr(trust, n)]
    if missing:
        flags = " ".join(FLAGS[n] for n in missing)
        raise BadInput(f"{what} loads {' and '.join(WHY[n] for n in missing)}; pass {flags} only if you trust "
                       "where it came from")
