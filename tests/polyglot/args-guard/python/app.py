"""args-guard (Python, componentize-py): refuses a `tools/call` whose arguments
mention a production host. The same policy exists in Rust
(tests/policies/args-guard-rust) and JavaScript (../js); all three must decide
identically. The rule, exactly:

- every string value of the arguments JSON (recursively through objects and
  arrays; object keys are not inspected) is split into maximal runs of ASCII
  [A-Za-z0-9.-];
- each run is lowercased and stripped of leading and trailing '.' and '-';
- a run is a production host when it ends with ".<domain>" for one of the
  configured domains and is longer than that suffix (*.prod.internal).

A call mentioning such hosts is denied with -32001 "Denied: production host";
the audit reason lists the hosts (sorted, without repeats). Arguments that are
not JSON are denied with -32603 "Internal error". Listing, resources and
prompts are not affected (their hooks allow and pass, and are declared absent).
Settings: {"domains"?: [string]} (default ["prod.internal"]).
"""

import json
import re

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

CODE = -32001
MESSAGE = "Denied: production host"
RUN = re.compile(r"[A-Za-z0-9.-]+")


def _type_name(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _suffixes(settings: str):
    """The configured suffixes (".prod.internal"); raises ValueError(message)."""
    obj = {}
    if settings.strip():
        try:
            obj = json.loads(settings)
        except ValueError as e:
            raise ValueError(f"settings are not valid JSON: {e}")
        if obj is None:
            obj = {}
    if not isinstance(obj, dict):
        raise ValueError(f"settings must be a JSON object, got {_type_name(obj)}")
    for key in obj:
        if key != "domains":
            raise ValueError(f"unknown settings key `{key}`")
    domains = ["prod.internal"]
    if "domains" in obj:
        d = obj["domains"]
        if not isinstance(d, list):
            raise ValueError(
                f"settings key `domains` must be an array of strings, got {_type_name(d)}"
            )
        for i, item in enumerate(d):
            if not isinstance(item, str):
                raise ValueError(
                    f"settings key `domains[{i}]` must be a string, got {_type_name(item)}"
                )
        domains = d
    if not domains:
        raise ValueError("settings key `domains` must not be empty")
    for d in domains:
        if d.strip(".-") == "":
            raise ValueError(f"settings key `domains` has an empty domain {json.dumps(d)}")
    return ["." + d.strip(".-").lower() for d in domains]


def _hosts_in(s, sfx, found):
    for run in RUN.findall(s):
        h = run.strip(".-").lower()
        if any(len(h) > len(x) and h.endswith(x) for x in sfx):
            found.add(h)


def _walk(v, sfx, found):
    if isinstance(v, str):
        _hosts_in(v, sfx, found)
    elif isinstance(v, list):
        for x in v:
            _walk(x, sfx, found)
    elif isinstance(v, dict):
        for x in v.values():
            _walk(x, sfx, found)


def _deny(code, message, reason):
    return types.Verdict_Deny(types.Denial(code=code, message=message, reason=reason))


def _reject_constant(name):
    # NaN and Infinity are not JSON (Rust's and JavaScript's parsers refuse them too).
    raise ValueError(f"{name} is not JSON")


def decide(settings: str, arguments: str):
    try:
        sfx = _suffixes(settings)
    except ValueError as e:
        return _deny(-32603, "Internal error", str(e))
    try:
        value = json.loads(arguments, parse_constant=_reject_constant)
    except ValueError:
        return _deny(-32603, "Internal error", "arguments are not valid JSON")
    found = set()
    _walk(value, sfx, found)
    if not found:
        return types.Verdict_Allow()
    hosts = sorted(found)
    noun = "host" if len(hosts) == 1 else "hosts"
    return _deny(CODE, MESSAGE, f"arguments mention production {noun} {', '.join(hosts)}")


class WitWorld(wit_world.WitWorld):
    def validate_settings(self, settings: str) -> None:
        try:
            _suffixes(settings)
        except ValueError as e:
            raise Err(str(e))

    def describe(self, settings: str) -> types.Manifest:
        # Only calls are checked, from their arguments alone, the same way every time.
        return types.Manifest(
            filter_tools=False,
            check_call=True,
            check_result=False,
            reads_connector_tools=False,
            reads_arguments=True,
            deterministic=True,
            reads_tool_definitions=False,
            filter_resources=False,
            check_resource=False,
            check_resource_contents=False,
            filter_prompts=False,
            check_prompt=False,
            check_prompt_result=False,
        )

    def filter_tools(self, settings, ctx):
        return [types.Verdict_Allow() for _ in ctx.connector.tools]

    def check_call(self, settings, ctx, tool, arguments):
        v = decide(settings, arguments)
        if isinstance(v, types.Verdict_Deny):
            host.log(types.Level.DEBUG, f"args-guard (python): {v.value.reason}")
        return v

    def check_result(self, settings, ctx, tool, result):
        return types.ResultVerdict_Pass()

    # Resources and prompts: declared absent above, so never called; allow and pass.
    def filter_resources(self, settings, ctx, items):
        return [types.Verdict_Allow() for _ in items]

    def check_resource(self, settings, ctx, item, action):
        return types.Verdict_Allow()

    def check_resource_contents(self, settings, ctx, item, result):
        return types.ResultVerdict_Pass()

    def filter_prompts(self, settings, ctx, items):
        return [types.Verdict_Allow() for _ in items]

    def check_prompt(self, settings, ctx, item, action):
        return types.Verdict_Allow()

    def check_prompt_result(self, settings, ctx, item, result):
        return types.ResultVerdict_Pass()
