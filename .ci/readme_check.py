#!/usr/bin/env python3
"""The README's walkthrough as a test: the half that reads and compares.

    readme_check.py extract README WORKDIR PORT   # blocks, and the driver that runs them
    readme_check.py compare WORKDIR STATUS        # real outputs against the README's
                                                  # (STATUS: the driver's exit status)

`extract` takes the walkthrough section (from `## Walkthrough with grpcurl`
up to `## The lifecycle`), writes each ```sh block to WORKDIR/blocks/N.sh
with every `127.0.0.1:50051` replaced by `127.0.0.1:PORT`, and writes
WORKDIR/driver.sh, which runs them in order in one bash process (so a
variable set in one block is there in the next). An HTML comment on the
line before a ```sh block (blank lines between are allowed) changes how it
runs:

    <!-- readme-test: background -->  run in the background (another
        terminal in the text); the next block starts once it has printed
        something (at most 10 s), it is stopped after the last block, and its
        output is compared then: the README shows the first messages of a
        stream, so only that many are compared.
    <!-- readme-test: fails -->  the block is an expected error: it must exit
        non-zero, and its error output is compared.
    <!-- readme-test: skip -->  not run.

After the keyword, the comment may say why: `<!-- readme-test: skip (why) -->`.

A ```json or ```text block that directly follows a ```sh block (only blank
lines between) is that block's expected output. Both stdout and stderr of a
block are its output, as in a terminal.

`compare` compares each expected output with the real one: JSON as JSON
(same keys, recursively, same array lengths, same values), text line by
line. Values the server generates differ from run to run; the keys and
patterns below say which they are, and those are only checked for their
form, and for agreeing with each other: where the README shows one
generated value in several places (a secret's id when it is generated and
when it is active), the real outputs must show one value there too, and
different values where the README shows different ones.
"""

import json
import re
import sys
from pathlib import Path

SECTION_START = "## Walkthrough with grpcurl"
SECTION_END = "## The lifecycle"
README_ADDRESS = "127.0.0.1:50051"

# --- Generated values: the one place that says what may differ ------------

RFC3339 = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

# JSON keys whose values are generated, with the form the value must have.
GENERATED_KEYS = {
    "id": UUID,
    "secretId": UUID,
    "clientId": r"[A-Za-z0-9]{24}",
    "clientSecret": r"cas_[A-Za-z0-9]{60}",
    "hint": r"[A-Za-z0-9]{4}",
    "verificationCode": r"[A-Za-z0-9_-]{32}",
    "nextPageToken": r"[A-Za-z0-9_-]+",
}
# Every key ending in this is a timestamp.
GENERATED_KEY_SUFFIX = ("Time", RFC3339)

# Keys recorded off the request path (src/usage.rs: within a second of the
# use): whether an answer has them yet depends on timing, so either side may
# lack them.
TIMING_KEYS = {"lastUseTime", "lastRetiredUseTime"}

# In text outputs (errors, listings), the generated values found by their
# form alone: timestamps, UUIDs, secrets, and any run of 20 or more
# characters of [A-Za-z0-9_-] (client IDs, verification codes, page tokens;
# no word of the text is that long).
GENERATED_TEXT = [RFC3339, UUID, r"cas_[A-Za-z0-9]+", r"[A-Za-z0-9_-]{20,}"]

# --- Extraction -------------------------------------------------------------

MARKER = re.compile(r"^<!--\s*readme-test:\s*(background|fails|skip)\b.*-->\s*$")
FENCE = re.compile(r"^```(\S*)\s*$")


def section(readme_text):
    lines = readme_text.split("\n")
    try:
        start = next(i for i, l in enumerate(lines) if l.rstrip() == SECTION_START)
    except StopIteration:
        sys.exit(f"no line {SECTION_START!r} in the README")
    try:
        end = next(
            i for i in range(start + 1, len(lines)) if lines[i].rstrip() == SECTION_END
        )
    except StopIteration:
        sys.exit(f"no line {SECTION_END!r} after {SECTION_START!r} in the README")
    return start, lines[start:end]


def blocks(readme_text):
    """The fenced blocks of the section, with the marker before each."""
    offset, lines = section(readme_text)
    out = []
    i = 0
    marker = None
    previous = None  # the last fenced block, if only blank lines followed it
    while i < len(lines):
        line = lines[i]
        m = MARKER.match(line)
        if m:
            marker = m.group(1)
            i += 1
            continue
        f = FENCE.match(line)
        if f and f.group(1):
            lang = f.group(1)
            j = i + 1
            while j < len(lines) and lines[j].rstrip() != "```":
                j += 1
            if j == len(lines):
                sys.exit(f"README line {offset + i + 1}: ``` block never closed")
            block = {
                "lang": lang,
                "line": offset + i + 1,
                "text": "\n".join(lines[i + 1 : j]) + "\n",
                "mode": "run",
            }
            if lang == "sh":
                block["mode"] = marker or "run"
                block["expected"] = None
                out.append(block)
                previous = block
            elif lang in ("json", "text") and previous is not None:
                if previous["expected"] is not None:
                    sys.exit(f"README line {block['line']}: a second output block")
                previous["expected"] = block
            marker = None
            i = j + 1
            continue
        if line.strip():
            previous = None
            if marker:
                sys.exit(
                    f"README line {offset + i + 1}: a readme-test marker must come "
                    "right before a ```sh block"
                )
        i += 1
    return out


DRIVER_HEAD = r"""# Generated by .ci/readme_check.py: the walkthrough's blocks in one shell.
set -euo pipefail
set -m  # each background block in a process group of its own, to stop it whole
_rt_background=()
_rt_stop() {
    for _rt_pid in "${_rt_background[@]}"; do
        kill -- "-$_rt_pid" 2>/dev/null || true
        wait "$_rt_pid" 2>/dev/null || true
    done
    _rt_background=()
}
trap _rt_stop EXIT
_rt_announce() {
    echo "$1" >"$_rt_workdir/current"
    printf -- '--> block %s (README line %s, %s): %s\n' "$1" "$2" "$3" "$4" >&2
}
"""


def extract(readme, workdir, port):
    readme_text = Path(readme).read_text()
    workdir = Path(workdir)
    (workdir / "blocks").mkdir(parents=True, exist_ok=True)
    (workdir / "out").mkdir(parents=True, exist_ok=True)
    found = blocks(readme_text)
    if not found:
        sys.exit("no ```sh block in the walkthrough")
    driver = [DRIVER_HEAD, f"_rt_workdir={sh_quote(str(workdir))}\n"]
    for n, b in enumerate(found, 1):
        code = b["text"].replace(README_ADDRESS, f"127.0.0.1:{port}")
        path = workdir / "blocks" / f"{n}.sh"
        path.write_text(code)
        out = workdir / "out" / f"{n}.out"
        first = b["text"].strip().split("\n")[0]
        q = sh_quote
        driver.append(
            f"_rt_announce {n} {b['line']} {b['mode']} {q(first)}\n"
        )
        if b["mode"] == "skip":
            continue
        if b["mode"] == "run":
            driver.append(f"source {q(str(path))} >{q(str(out))} 2>&1\n")
        elif b["mode"] == "fails":
            driver.append(
                f"if source {q(str(path))} >{q(str(out))} 2>&1; then\n"
                f"    echo 'block {n} (README line {b['line']}) was to fail, and succeeded' >&2\n"
                "    exit 1\n"
                "fi\n"
            )
        elif b["mode"] == "background":
            driver.append(
                f"( source {q(str(path))} ) >{q(str(out))} 2>&1 &\n"
                "_rt_background+=($!)\n"
                f"for _ in $(seq 100); do [ -s {q(str(out))} ] && break; sleep 0.1; done\n"
            )
    driver.append('echo done >"$_rt_workdir/current"\n')
    (workdir / "driver.sh").write_text("".join(driver))
    (workdir / "manifest.json").write_text(json.dumps(found, indent=1))


def sh_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


# --- Comparison ---------------------------------------------------------------


def json_values(text):
    """The JSON values one after another in text (a stream prints several)."""
    decoder = json.JSONDecoder()
    values = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return values
        value, i = decoder.raw_decode(text, i)
        values.append(value)


def generated_form(key):
    if key in GENERATED_KEYS:
        return GENERATED_KEYS[key]
    if key.endswith(GENERATED_KEY_SUFFIX[0]):
        return GENERATED_KEY_SUFFIX[1]
    return None


def compare_json(expected, real, path, problems, pairs):
    if isinstance(expected, dict) and isinstance(real, dict):
        for key in sorted(set(expected) | set(real), key=str):
            where = f"{path}.{key}"
            if key not in real:
                if key not in TIMING_KEYS:
                    problems.append(f"{where}: in the README, not in the real output")
                continue
            if key not in expected:
                if key not in TIMING_KEYS:
                    problems.append(f"{where}: in the real output, not in the README")
                continue
            form = generated_form(key)
            if form is not None:
                for side, value in (("README", expected[key]), ("real", real[key])):
                    if not isinstance(value, str) or not re.fullmatch(form, value):
                        problems.append(
                            f"{where}: {side} value {json.dumps(value)} is not of the form {form}"
                        )
                pairs.append((where, expected[key], real[key]))
            else:
                compare_json(expected[key], real[key], where, problems, pairs)
    elif isinstance(expected, list) and isinstance(real, list):
        if len(expected) != len(real):
            problems.append(
                f"{path}: {len(expected)} elements in the README, {len(real)} in the real output"
            )
        for k, (e, r) in enumerate(zip(expected, real)):
            compare_json(e, r, f"{path}[{k}]", problems, pairs)
    elif type(expected) is not type(real) or expected != real:
        problems.append(f"{path}: README {json.dumps(expected)}, real {json.dumps(real)}")


def mask(line):
    for pattern in GENERATED_TEXT:
        line = re.sub(pattern, "<generated>", line)
    return line.rstrip()


def compare_block(block, real_text, pairs):
    """Problems found; empty when the real output matches the README's."""
    expected = block["expected"]
    problems = []
    if expected["lang"] == "json":
        try:
            want = json_values(expected["text"])
        except ValueError as e:
            return [f"the README's JSON does not parse: {e}"]
        try:
            got = json_values(real_text)
        except ValueError as e:
            return [f"the real output is not JSON: {e}"]
        if block["mode"] == "background":
            # A stream: the README shows its first messages.
            got = got[: len(want)]
        if len(want) != len(got):
            problems.append(
                f"{len(want)} JSON values in the README, {len(got)} in the real output"
            )
        for k, (e, r) in enumerate(zip(want, got)):
            compare_json(e, r, f"value {k + 1}" if len(want) > 1 else "$", problems, pairs)
    else:
        want = [mask(l) for l in expected["text"].strip("\n").split("\n")]
        got = [mask(l) for l in real_text.strip("\n").split("\n")]
        if block["mode"] == "background":
            got = got[: len(want)]
        if want != got:
            for k in range(max(len(want), len(got))):
                e = want[k] if k < len(want) else "(no line)"
                r = got[k] if k < len(got) else "(no line)"
                if e != r:
                    problems.append(f"line {k + 1}: README {e!r}, real {r!r}")
    return problems


def consistency(pairs):
    """Generated values differ from run to run, but where the README shows
    one value twice (the id of a secret, once generated and then active),
    the real outputs must show one value there too, and where it shows two
    different values, two different ones."""
    problems = []
    for side, other, name in ((1, 2, "README"), (2, 1, "real output")):
        seen = {}
        for pair in pairs:
            seen.setdefault(pair[side], []).append(pair)
        for value, group in seen.items():
            others = {p[other] for p in group}
            if len(others) > 1:
                places = ", ".join(p[0] for p in group)
                problems.append(
                    f"the {name} shows {json.dumps(value)} at {places}; "
                    f"the other side shows {len(others)} different values there"
                )
    return problems


def indent(text):
    return "".join("    | " + l + "\n" for l in text.rstrip("\n").split("\n"))


def compare(workdir, rc):
    workdir = Path(workdir)
    found = json.loads((workdir / "manifest.json").read_text())
    current = (workdir / "current").read_text().strip() if (workdir / "current").exists() else ""
    failed = 0
    checked = 0
    pairs = []  # (where, README value, real value) of every generated value
    for n, block in enumerate(found, 1):
        out = workdir / "out" / f"{n}.out"
        if current != "done" and current == str(n):
            failed += 1
            why = {
                "fails": "was to fail, and succeeded",
                "background": "could not be started",
            }.get(block["mode"], f"failed (exit status {rc})")
            print(f"FAIL block {n} (README line {block['line']}): the block {why}")
            print("  block:")
            print(indent(block["text"]), end="")
            print("  its output:")
            print(indent(out.read_text() if out.exists() else "(none)"), end="")
            if block["expected"]:
                print("  expected:")
                print(indent(block["expected"]["text"]), end="")
            break
        if block["mode"] == "skip":
            print(f"skip block {n} (README line {block['line']})")
            continue
        if not out.exists():
            break
        if block["expected"] is None:
            print(f"ok   block {n} (README line {block['line']}): ran, no output shown in the README")
            continue
        checked += 1
        block_pairs = []
        problems = compare_block(block, out.read_text(), block_pairs)
        pairs.extend((f"block {n} {where}", e, r) for where, e, r in block_pairs)
        if problems:
            failed += 1
            print(f"FAIL block {n} (README line {block['line']}): output differs")
            for p in problems:
                print(f"  - {p}")
            print("  block:")
            print(indent(block["text"]), end="")
            print("  real output:")
            print(indent(out.read_text()), end="")
            print(f"  expected (README line {block['expected']['line']}):")
            print(indent(block["expected"]["text"]), end="")
        else:
            print(f"ok   block {n} (README line {block['line']}): output matches")
    problems = consistency(pairs)
    if problems:
        failed += 1
        print("FAIL generated values: the README's and the real ones are not alike")
        for p in problems:
            print(f"  - {p}")
    if (current != "done" or rc != 0) and failed == 0:
        failed += 1
        print(f"FAIL the blocks' shell ended with status {rc} (at block {current or 'none'})")
    print(
        f"{len(found)} blocks, {checked} outputs compared, "
        + ("all match" if failed == 0 else f"{failed} failed")
    )
    return 1 if failed else 0


def main(argv):
    if len(argv) == 5 and argv[1] == "extract":
        extract(argv[2], argv[3], int(argv[4]))
        return 0
    if len(argv) == 4 and argv[1] == "compare":
        return compare(argv[2], int(argv[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
