"""The served config dir as a cluster's state: one file per object, so applying a file replaces
the objects it names (`kubectl apply`) and deleting a file removes them (`kubectl delete -f`).

This is how Istio's tasks are written: `virtual-service-reviews-test-v2.yaml` is applied over the
`reviews` VirtualService of `virtual-service-all-v1.yaml`, and the new one wins.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import yaml


class ConfigDir:
    def __init__(self, path: Path, scratch: Path) -> None:
        self.path = path
        self.scratch = scratch
        path.mkdir(parents=True, exist_ok=True)
        scratch.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _file_name(doc: dict[str, Any], source: str) -> str:
        meta = doc.get("metadata") or {}
        if not doc.get("kind") or not meta.get("name"):
            raise ValueError(f"{source}: an object without kind or metadata.name: {doc!r:.200}")
        ns = meta.get("namespace") or "default"
        return f"{doc['kind']}.{ns}.{meta['name']}.yaml".lower()

    @staticmethod
    def _docs(text: str) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(text) if d]

    def apply(self, text: str, source: str) -> list[str]:
        """Writes each object of `text` (rendered YAML) to its own file; returns the file names.

        Each file is written aside and renamed in, so pilotfish's watcher never reads half a file.
        """
        names = []
        for doc in self._docs(text):
            name = self._file_name(doc, source)
            tmp = self.scratch / name
            tmp.write_text(f"# from {source}\n" + yaml.safe_dump(doc, sort_keys=False))
            os.replace(tmp, self.path / name)
            names.append(name)
        return names

    def delete(self, text: str, source: str) -> list[str]:
        names = [self._file_name(d, source) for d in self._docs(text)]
        for name in names:
            (self.path / name).unlink(missing_ok=True)
        return names

    def objects(self) -> Iterator[dict[str, Any]]:
        for f in sorted(self.path.glob("*.yaml")):
            yield from self._docs(f.read_text())

    def dump(self, limit: int = 12000) -> str:
        text = "\n".join(f"--- {f.name}\n{f.read_text()}" for f in sorted(self.path.glob("*.yaml")))
        return text if len(text) <= limit else text[:limit] + "\n…"
