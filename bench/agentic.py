"""Agentic workloads on the local tier: tool calling and JSON extraction, grammar-constrained vs unconstrained.

Runs the tasks in bench/data/agentic_tasks.json (25 tool calls with the expected function and arguments, 25
extractions with the expected fields) on the bundled model in-process, in three modes, interleaved task by task
(the order rotated, the model's cache reset before each run so every run evaluates its whole prompt):

- `grammar-first`: the gateway's local tier (tools / json_schema enforced by grammar; the grammar is checked
  against the sampled token and applied to the vocabulary only when it rejects it, gateway/tiers/grammar_sampler.py);
- `full-mask`: the same grammar applied by llama-cpp-python's stock sampler chain to the whole vocabulary at every
  token (the gateway before grammar_sampler);
- `unconstrained`: the same prompt with the tools rendered, no grammar (the first JSON object in the text is
  taken as the answer).

Prints per mode: schema-valid rate (parses and validates), task accuracy (the expected call / fields; strings
compared case-insensitively, a plural 's' ignored), mean latency (prompt evaluation + decoding), decode tokens/s
(tokens after the first / time after the first), and for the constrained modes the decode speed lost against
unconstrained; for grammar-first, how often the sampled token was rejected. First, the share of these agent
requests (sent as `model: auto`) that the default policy keeps on the local tier, by the rule that decided.

    python bench/agentic.py [--limit N] [--threads T] [--modes grammar-first,unconstrained] [--json out.json]
    python bench/agentic.py --routing-only       # just the default policy's local share (no generation)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jsonschema  # noqa: E402
import msgspec  # noqa: E402

from gateway.openai.request import parse_chat_request  # noqa: E402
from gateway.routing.decision import RouteContext  # noqa: E402
from gateway.routing.reloadable import router_from_settings  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from gateway.tiers.bundled_model import ensure_bundled_model  # noqa: E402
from gateway.tiers.grammar_sampler import GrammarFirstSampler  # noqa: E402
from gateway.tiers.llama_generation import generate  # noqa: E402
from gateway.tiers.local import LlamaCppBackend  # noqa: E402

TASKS = ROOT / "bench" / "data" / "agentic_tasks.json"
MODES = ("grammar-first", "full-mask", "unconstrained")
_DECODER = json.JSONDecoder()


def first_json_object(text: str) -> Any:
    """The first JSON object in free text (None if there is none)."""
    for match in re.finditer(r"\{", text):
        try:
            value, _ = _DECODER.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def same(got: Any, want: Any) -> bool:
    if isinstance(want, str) and isinstance(got, str):
        return got.strip().casefold().rstrip("s") == want.strip().casefold().rstrip("s")
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return float(got) == float(want)
    return bool(got == want)


def score(task: dict[str, Any], answer: Any, schemas: dict[str, Any], tools: dict[str, Any]) -> tuple[bool, bool]:
    """(schema-valid, correct) for one answer: a call {"name", "arguments"} or an extracted object."""
    want = task["expected"]
    if task["kind"] == "tool":
        if not isinstance(answer, dict) or answer.get("name") not in tools:
            return False, False
        args = answer.get("arguments")
        try:
            jsonschema.validate(args, tools[answer["name"]])
        except jsonschema.ValidationError:
            return False, False
        correct = answer["name"] == want["name"] and all(same(args.get(k), v) for k, v in want["arguments"].items())
        return True, correct
    try:
        jsonschema.validate(answer, schemas[task["schema"]])
    except jsonschema.ValidationError:
        return False, False
    return True, all(same(answer.get(k), v) for k, v in want.items())


def body(task: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "local", "temperature": 0, "max_tokens": 64,
                           "messages": [{"role": "user", "content": task["prompt"]}]}
    if task["kind"] == "tool":
        out["tools"] = data["tools"]
        out["tool_choice"] = "required"
    else:
        schema = data["schemas"][task["schema"]]
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": task["schema"], "schema": schema}}
    return out


async def run_one(backend: LlamaCppBackend, task: dict[str, Any], data: dict[str, Any], mode: str) -> dict[str, Any]:
    request = parse_chat_request(msgspec.json.encode(body(task, data)))
    prepared = backend._prepare(request)
    if mode == "unconstrained":
        prepared.params = msgspec.structs.replace(prepared.params, grammar=None, probe_names=(), call_grammar=None)
    instance = await backend._acquire()
    try:
        instance.grammar_first = mode == "grammar-first"
        instance.reset()  # every run evaluates its whole prompt: latencies comparable across modes
        started = time.perf_counter()
        result = await asyncio.to_thread(generate, instance, prepared.tokens, prepared.params, None, threading.Event())
        seconds = time.perf_counter() - started
        sampler = instance._sampler
        counts = sampler.counts if isinstance(sampler, GrammarFirstSampler) else None
    finally:
        instance.grammar_first = True
        backend._release(instance)
    text = result.text
    if task["kind"] == "tool":
        calls = re.findall(r"<tool_call>\s*(.*?)\s*</tool_call>", text, re.DOTALL)
        answer = first_json_object(calls[0] if calls else text)
    else:
        answer = first_json_object(text)
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in data["tools"]}
    valid, correct = score(task, answer, data["schemas"], tools)
    return {
        "valid": valid, "correct": correct, "seconds": seconds, "tokens": result.completion_tokens,
        "decode_seconds": result.decode_seconds,
        "sampled": counts.sampled if counts else 0,
        "rejected": counts.window + counts.full if counts else 0,
        "full_passes": counts.full if counts else 0,
    }


def default_policy_share(tasks: list[dict[str, Any]], data: dict[str, Any]) -> dict[str, Any]:
    """Where the default policy (shipped router and `policies/default.yaml`) sends each task as `model: auto`,
    with both tiers configured: the local share and the count per deciding rule."""
    router = router_from_settings(Settings())
    by_rule: dict[str, int] = {}
    local = 0
    for task in tasks:
        request = parse_chat_request(msgspec.json.encode({**body(task, data), "model": "auto"}))
        decision = router.decide(RouteContext(request=request, headers={}, has_upstream=True, has_local=True,
                                              local_features=LlamaCppBackend.features))
        local += decision.tier == "local"
        key = f"{decision.reason} -> {decision.tier}"
        by_rule[key] = by_rule.get(key, 0) + 1
    return {"local_share": local / len(tasks), "by_rule": dict(sorted(by_rule.items()))}


def chosen_tasks(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    data = json.loads(TASKS.read_text())
    tasks = data["tasks"]
    if args.limit:  # an even spread over the task kinds
        step = max(1, len(tasks) // args.limit)
        tasks = tasks[::step][: args.limit]
    return tasks, data


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tasks, data = chosen_tasks(args)
    backend = LlamaCppBackend(str(ensure_bundled_model()), context_size=2048, threads=args.threads)
    await backend.start()
    report: dict[str, Any] = {"tasks": len(tasks), "machine": f"{platform.machine()} {os.cpu_count()} cpus",
                              "load_avg_1m_at_start": os.getloadavg()[0]}
    modes = args.modes
    rows: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    try:
        for i, task in enumerate(tasks):
            for mode in modes[i % len(modes):] + modes[: i % len(modes)]:  # rotated: no mode always runs first
                rows[mode].append(await run_one(backend, task, data, mode))
        for mode in modes:
            n = len(rows[mode])
            decode = sum(r["decode_seconds"] for r in rows[mode])
            sampled = sum(r["sampled"] for r in rows[mode])
            report[mode] = {
                "schema_valid_rate": sum(r["valid"] for r in rows[mode]) / n,
                "task_accuracy": sum(r["correct"] for r in rows[mode]) / n,
                "mean_latency_s": sum(r["seconds"] for r in rows[mode]) / n,
                "tokens": sum(r["tokens"] for r in rows[mode]),
                "tokens_per_s": sum(max(0, r["tokens"] - 1) for r in rows[mode]) / decode if decode else 0.0,
                "rejected_share": sum(r["rejected"] for r in rows[mode]) / sampled if sampled else None,
                "full_pass_share": sum(r["full_passes"] for r in rows[mode]) / sampled if sampled else None,
            }
        if "unconstrained" in report:
            free = report["unconstrained"]["tokens_per_s"]
            for mode in modes:
                report[mode]["tokens_per_s_lost"] = 1 - report[mode]["tokens_per_s"] / free if free else None
    finally:
        await backend.close()
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=0, help="run only N tasks (spread over the kinds)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--routing-only", action="store_true", help="only the default policy's local share")
    options = parser.parse_args()
    chosen, task_data = chosen_tasks(options)
    share = default_policy_share(chosen, task_data)
    print(f"default policy: {share['local_share']:.0%} of {len(chosen)} agent requests kept local")
    for rule, count in share["by_rule"].items():
        print(f"  {count:>3}  {rule}")
    if options.routing_only:
        sys.exit(0)
    options.modes = tuple(m for m in options.modes.split(",") if m)
    if not options.modes or set(options.modes) - set(MODES):
        parser.error(f"--modes: choose from {', '.join(MODES)}")
    figures = asyncio.run(main(options))
    print(f"{figures['tasks']} tasks on {figures['machine']} (load avg {figures['load_avg_1m_at_start']:.1f})")
    print(f"{'mode':<15}{'schema-valid':>13}{'accuracy':>10}{'latency s':>11}{'tokens':>8}{'tokens/s':>10}"
          f"{'tok/s lost':>12}{'rejected':>10}{'full pass':>10}")
    for mode in options.modes:
        m = figures[mode]
        lost = "" if m.get("tokens_per_s_lost") is None else f"{m['tokens_per_s_lost']:.1%}"
        rejected = "" if m["rejected_share"] is None else f"{m['rejected_share']:.1%}"
        full = "" if m["full_pass_share"] is None else f"{m['full_pass_share']:.1%}"
        print(f"{mode:<15}{m['schema_valid_rate']:>13.0%}{m['task_accuracy']:>10.0%}"
              f"{m['mean_latency_s']:>11.2f}{m['tokens']:>8}{m['tokens_per_s']:>10.1f}{lost:>12}{rejected:>10}{full:>10}")
    if options.json:
        Path(options.json).write_text(json.dumps({**figures, "default_policy": share}, indent=2))
