"""The docs stay true to the code, mechanically.

- every `manage.py <command>` in README.md and docs/ is a management command of the project
  (the sandboxes' commands included: the tests run with them installed);
- every `make <target>` in their code is a target of the Makefile;
- every Celery task named in docs/architecture/worker.md is registered, and every registered
  `switchyard.*` task and every beat entry's task is named there; the queue and the retry
  count its task table gives are the ones the code has;
- every relative link in README.md and docs/ (and bench/README.md) points to a file that
  exists, and a `#fragment` to a heading of that file.

Each check is a pure function of the text, so the tests at the bottom also show that each one
fails on a broken document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER_MD = ROOT / "docs" / "architecture" / "worker.md"


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "bench" / "README.md"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    return files


FENCE = re.compile(r"^(```|~~~)[^\n]*\n.*?^\1[ \t]*$", re.M | re.S)
INLINE = re.compile(r"(`+)(.+?)\1", re.S)


def code_of(text: str) -> list[str]:
    """The code in a Markdown text: fenced blocks and inline code spans."""
    blocks = [m.group(0) for m in FENCE.finditer(text)]
    prose = FENCE.sub("", text)
    return blocks + [m.group(2) for m in INLINE.finditer(prose)]


def prose_of(text: str) -> str:
    """The text without its fenced blocks (links in code are not links)."""
    return FENCE.sub("", text)


# --- manage.py <command> -------------------------------------------------------------------

MANAGE = re.compile(r"manage\.py\s+([a-z][a-z0-9_]*)")


def manage_commands_in(text: str) -> set[str]:
    """Every `manage.py <name>` of a text, prose included (a command named in a sentence
    must exist as much as one in a code block)."""
    return set(MANAGE.findall(text))


def management_commands() -> set[str]:
    from django.core.management import get_commands

    return set(get_commands())


def unknown_manage_commands(text: str, known: set[str]) -> set[str]:
    return manage_commands_in(text) - known


def test_every_manage_py_command_in_the_docs_exists():
    known = management_commands()
    missing = {
        f"{path.relative_to(ROOT)}: manage.py {name}"
        for path in doc_files()
        for name in unknown_manage_commands(path.read_text(), known)
    }
    assert not missing, sorted(missing)


# --- make <target> ---------------------------------------------------------------------------

MAKE = re.compile(r"(?:^|[\s;&|(])make\s+([a-z][a-zA-Z0-9_-]*)", re.M)


def make_targets_in(text: str) -> set[str]:
    """Targets of `make` in the code of a text (in prose, "make" is an English word)."""
    return {target for code in code_of(text) for target in MAKE.findall(code)}


def makefile_targets(makefile: str) -> set[str]:
    return set(re.findall(r"^([a-zA-Z][\w-]*)\s*:(?!=)", makefile, re.M))


def test_every_make_target_in_the_docs_exists():
    targets = makefile_targets((ROOT / "Makefile").read_text())
    missing = {
        f"{path.relative_to(ROOT)}: make {target}"
        for path in doc_files()
        for target in make_targets_in(path.read_text()) - targets
    }
    assert not missing, sorted(missing)


# --- Celery tasks in worker.md -----------------------------------------------------------------

TASK_NAME = re.compile(r"\bswitchyard\.[a-z_]+\.[a-z_]+\b")


def task_names_in(text: str) -> set[str]:
    return set(TASK_NAME.findall(text))


def celery_app():
    from workers.celery import app

    app.loader.import_default_modules()  # the autodiscovered tasks modules
    return app


def registered_tasks(app) -> set[str]:
    return {name for name in app.tasks if name.startswith("switchyard.")}


def scheduled_tasks(app) -> set[str]:
    return {entry["task"] for entry in app.conf.beat_schedule.values()}


def worker_md_problems(text: str, *, registered: set[str], scheduled: set[str]) -> list[str]:
    named = task_names_in(text)
    problems = [f"worker.md names {name}, which is not a registered task"
                for name in sorted(named - registered)]
    problems += [f"the registered task {name} is not in worker.md"
                 for name in sorted(registered - named)]
    problems += [f"the periodic task {name} (beat_schedule) is not in worker.md"
                 for name in sorted(scheduled - named)]
    return problems


TABLE_ROW = re.compile(
    r"^\| `(switchyard\.[a-z_]+\.[a-z_]+)`[^|]*\| `?([a-z]+)`? \|[^|]*\| ([^|]+) \|", re.M)


def task_table_problems(text: str, *, queue_of, max_retries_of) -> list[str]:
    """The table of worker.md ("The tasks"): the queue and the number of retries of each row
    (`| task | queue | schedule | retries (base / max) | … |`) against the code."""
    problems = []
    rows = TABLE_ROW.findall(text)
    for name, queue, retries in rows:
        if queue_of(name) != queue:
            problems.append(f"{name}: worker.md says queue {queue}, "
                            f"the routes say {queue_of(name)}")
        first = retries.strip().split()[0]
        if first.isdigit() and max_retries_of(name) != int(first):
            problems.append(f"{name}: worker.md says {first} retries, "
                            f"the task has max_retries={max_retries_of(name)}")
    return problems


def test_worker_md_names_every_task_and_only_real_ones():
    app = celery_app()
    problems = worker_md_problems(WORKER_MD.read_text(), registered=registered_tasks(app),
                                  scheduled=scheduled_tasks(app))
    assert not problems, problems


def queue_of_task(app, name: str) -> str:
    route = app.amqp.router.route({}, name, args=(), kwargs={})
    return route["queue"].name


def test_worker_md_task_table_matches_routes_and_retries():
    app = celery_app()
    text = WORKER_MD.read_text()
    assert len(TABLE_ROW.findall(text)) >= 8, "the task table of worker.md was not found"
    problems = task_table_problems(
        text, queue_of=lambda name: queue_of_task(app, name),
        max_retries_of=lambda name: app.tasks[name].max_retries)
    assert not problems, problems


# --- relative links ----------------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(text: str) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", prose_of(text), re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        anchors.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return anchors


def broken_links(path: Path, text: str) -> list[str]:
    problems = []
    for target in LINK.findall(prose_of(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, …
            continue
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{target}: no such file")
            continue
        if fragment and linked.suffix == ".md" and fragment not in anchors_of(linked.read_text()):
            problems.append(f"{target}: no heading #{fragment} in {linked.name}")
    return problems


def test_every_relative_link_points_to_a_file_that_exists():
    problems = [f"{path.relative_to(ROOT)}: {problem}"
                for path in doc_files() for problem in broken_links(path, path.read_text())]
    assert not problems, problems


# --- each check fails on a broken document -----------------------------------------------------

def _all(items: Iterable[str]) -> list[str]:
    return sorted(items)


def test_a_command_that_does_not_exist_is_found():
    known = management_commands()
    text = "Run `.venv/bin/python manage.py check_consistensy` after a restore."
    assert _all(unknown_manage_commands(text, known)) == ["check_consistensy"]
    assert not unknown_manage_commands("manage.py check_consistency --list-rules", known)


def test_a_make_target_that_does_not_exist_is_found():
    targets = makefile_targets((ROOT / "Makefile").read_text())
    text = "```sh\nPORT=8961 make serve\n```\nand `make test`; make sure it runs."
    assert make_targets_in(text) == {"serve", "test"}
    assert make_targets_in(text) - targets == {"serve"}
    assert {"run", "test", "venv", "worker", "beat", "audit", "bench"} <= targets


def test_a_task_missing_from_worker_md_or_misnamed_there_is_found():
    app = celery_app()
    registered, scheduled = registered_tasks(app), scheduled_tasks(app)
    text = WORKER_MD.read_text()
    assert not worker_md_problems(text, registered=registered, scheduled=scheduled)
    without = text.replace("switchyard.cleanup.prune_retention", "the pruning job")
    assert worker_md_problems(without, registered=registered, scheduled=scheduled) == [
        "the registered task switchyard.cleanup.prune_retention is not in worker.md",
        "the periodic task switchyard.cleanup.prune_retention (beat_schedule) is not in "
        "worker.md"]
    misnamed = text + "\nAlso `switchyard.cleanup.purge_everything`.\n"
    assert worker_md_problems(misnamed, registered=registered, scheduled=scheduled) == [
        "worker.md names switchyard.cleanup.purge_everything, which is not a registered task"]


def test_a_wrong_queue_or_retry_count_in_the_task_table_is_found():
    app = celery_app()
    text = WORKER_MD.read_text()
    row = next(line for line in text.splitlines()
               if line.startswith("| `switchyard.payments.sync_unknown_outcomes`"))
    wrong = text.replace(row, row.replace("| payments |", "| default |", 1).replace(
        "| 2 (", "| 5 (", 1))
    problems = task_table_problems(
        wrong, queue_of=lambda name: queue_of_task(app, name),
        max_retries_of=lambda name: app.tasks[name].max_retries)
    assert problems == [
        "switchyard.payments.sync_unknown_outcomes: worker.md says queue default, the routes "
        "say payments",
        "switchyard.payments.sync_unknown_outcomes: worker.md says 5 retries, the task has "
        "max_retries=2"]


def test_a_broken_link_or_anchor_is_found():
    path = ROOT / "docs" / "operations" / "README.md"
    text = ("[ok](deployment.md) [gone](handbook-old.md) [anchor](../architecture/worker.md"
            "#reconciliation) [bad anchor](../architecture/worker.md#no-such-part) "
            "[web](https://example.com/x.md)\n```\n[in code](nowhere.md)\n```\n")
    assert broken_links(path, text) == [
        "handbook-old.md: no such file",
        "../architecture/worker.md#no-such-part: no heading #no-such-part in worker.md"]


@pytest.mark.parametrize("heading, anchor", [
    ("Merchant webhooks: the relay", "merchant-webhooks-the-relay"),
    ("Point-in-time recovery with WAL archiving", "point-in-time-recovery-with-wal-archiving"),
    ("`make audit` and CI", "make-audit-and-ci"),
    ("Redis: what is safe to flush", "redis-what-is-safe-to-flush"),
])
def test_slug(heading, anchor):
    assert slug(heading) == anchor
