"""What every benchmark writes: `benchmarks/results/NAME.json` with the machine (CPU model, cores, instruction
sets), library versions, date, command, its figures and its tables as markdown, from which `make bench-report`
(`benchmarks/report.py`) writes docs/benchmarks.md."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LIBRARIES = ("tensorflow", "keras", "keras-tuner", "torch", "onnxruntime", "ai-edge-litert", "openvino")


def cpu_name() -> str:
    """The CPU's model name and family, and the instruction sets that matter (`inception_keras.utils.cpu`)."""
    from inception_keras.utils.cpu import cpu_model

    return cpu_model()


def machine() -> dict:
    """The CPU, its cores (those this process may use), Python and the versions of the libraries installed here."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "versions": versions}


def about(script: str, doc: str, constants: dict) -> str:
    """A benchmark's description for its report: "`benchmarks/SCRIPT`: " and its docstring from the third paragraph
    on (after the title and the usage lines), each constant's name replaced by its value."""
    text = f"`benchmarks/{script}`: " + "\n\n".join(doc.split("\n\n")[2:]).strip()
    for name, value in constants.items():
        text = text.replace(name, ", ".join(map(str, value)) if isinstance(value, tuple) else str(value))
    return text


def command_line() -> str:
    """This process's command, as a user would type it: `python benchmarks/bench_x.py --flag`."""
    return " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])


class Results:
    """A benchmark's results: sections of markdown (tables and the sentences that read them) and figures."""

    def __init__(self, name: str, title: str, make: str, about: str):
        self.name, self.title, self.make, self.about = name, title, make, about
        self.sections: list[str] = []
        self.figures: dict = {}

    def add(self, markdown: str | list[str]) -> None:
        """A section (a table's lines, or a paragraph), printed now and kept for the report."""
        text = markdown if isinstance(markdown, str) else "\n".join(markdown)
        print(text + "\n", flush=True)
        self.sections.append(text)

    def write(self, path: str | Path | None = None, command: str | None = None, machine_of: dict | None = None) -> Path:
        """benchmarks/results/NAME.json (or `path`), written to a temporary file renamed into place; `command`: how
        it was made (default: this process's command line); `machine_of`: the machine its caption names (default
        this one: a part run elsewhere and added to results names its own machine in its text)."""
        from inception_keras.utils.atomic import atomic_write_text

        path = Path(path) if path else RESULTS / f"{self.name}.json"
        payload = {"benchmark": self.name, "title": self.title, "make": self.make, "about": self.about,
                   "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "command": command or command_line(),
                   "machine": machine_of or machine(), "sections": self.sections,
                   "figures": self.figures}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(payload, indent=1, allow_nan=False, default=float) + "\n")
        print(f"wrote {path}")
        return path
