"""Templates to files: render every manifest, parse each back, then land the folder whole.

Strings reach YAML only through the `yq` filter (a JSON string is a valid YAML scalar), so a model
name, image or URI can never inject keys. Rendered text is parsed back and checked for the fields
it must carry before anything is written; the folder is staged beside --out and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import jinja2

from tsrepo.config import templates_dir
from tsrepo.deploy.errors import DeployError
from tsrepo.repository import swap_in_folder

MARKER = ".tsrepo-deploy"  # in every folder tsrepo renders: only such a folder is replaced


def environment(folder: Path | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str((folder or templates_dir()) / "deploy")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["yq"] = lambda v: json.dumps(str(v), ensure_ascii=False)
    env.filters["yflow"] = lambda v: json.dumps(v, ensure_ascii=False)
    return env


def render(env: jinja2.Environment, template: str, context: dict) -> str:
    try:
        return env.get_template(template).render(**context)
    except jinja2.TemplateError as e:
        raise DeployError(f"templates/deploy/{template}: cannot be rendered ({e})") from None


def parse_back(files: dict[str, str]) -> dict[str, list[dict]]:
    """Each rendered file as YAML documents; a template that yields invalid YAML fails here, not in a cluster."""
    import yaml

    docs = {}
    for rel, text in files.items():
        try:
            docs[rel] = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as e:
            raise DeployError(f"{rel}: the rendered file is not valid YAML ({e}); check the template") from None
    return docs


def require(doc: dict, path: str, rel: str):
    """doc[a][b]... for 'a.b...', or DeployError naming the file and the field a template dropped."""
    value = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise DeployError(f"{rel}: the rendered manifest has no `{path}`; check the template")
        value = value[part]
    return value


def check_out(out: Path) -> None:
    """Before any work: --out is absent, empty or a folder tsrepo rendered, and its parent writable."""
    from tsrepo.repository import check_writable

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DeployError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise DeployError(
            f"{out}: a folder tsrepo did not render (no {MARKER} in it); choose an empty or new --out,"
            " tsrepo replaces only folders it wrote"
        )
    check_writable(out.parent if out.parent != out else out, option="--out")


def write(out: Path, files: dict[str, str]) -> None:
    """Stage every file beside --out, then swap the folder in: a failure leaves --out as it was."""
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tsrepo-", dir=out.parent))
    try:
        os.chmod(staging, 0o755)
        for rel, text in {
            **files,
            MARKER: "rendered by tsrepo deploy; the whole folder is replaced on the next run\n",
        }.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        swap_in_folder(staging, out)
    except OSError as e:
        raise DeployError(f"{out}: cannot write the rendered files ({e.strerror or e}); nothing was changed") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
