"""Worst-case time of path globs and path normalization, as request paths grow to Envoy's limit.

For each pathological pattern and path family, times every implementation that decides requests:
the interpreter's `glob_matches` (Python), the emitted runtime's `glob.match` (lua_runtime/glob.lua
on LuaJIT, as Envoy runs it), the RE2 regex the RBAC backend emits (with google-re2, from the
`fuzz` extra), and path normalization (semantics/paths.py). Prints a table of path size, time per
request and the growth ratio against the previous size: 4 means linear in the path (each size is
4 times the last), 16 quadratic. No assertions.

    .venv/bin/python bench/worst_case.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import lupa.luajit21 as lupa

from policyc.backends.lua import _glob as lua_glob_table
from policyc.resources import resource_dir
from policyc.semantics.glob import glob_matches, glob_to_regex
from policyc.semantics.paths import normalize_target

try:
    import re2
except ImportError:  # the RE2 column is left out without google-re2 (pip install google-re2)
    re2 = None

# Envoy's default limit on request headers is 60 KiB; the path is one of them.
SIZES = (960, 3840, 15360, 61440)


def _lua_glob() -> Callable[[str, str], bool]:
    runtime = lupa.LuaRuntime(encoding=None)
    source = (resource_dir("lua_runtime") / "glob.lua").read_bytes()
    glob = runtime.execute(source)
    match = runtime.eval("function(glob, pattern, path) return glob.match(pattern, glob.split(path)) end")
    compile_pattern = runtime.eval("function(glob, text) return loadstring('return ' .. text)() end")
    # The pattern table as the Lua backend emits it, with `glob.ANY` bound to this runtime's module.
    runtime.globals().glob = glob
    patterns: dict[str, object] = {}

    def matches(pattern: str, path: str) -> bool:
        if pattern not in patterns:
            patterns[pattern] = compile_pattern(glob, lua_glob_table(pattern).encode())
        return match(glob, patterns[pattern], path.encode())

    return matches


def _re2_glob() -> Callable[[str, str], bool] | None:
    if re2 is None:
        return None
    compiled: dict[str, object] = {}

    def matches(pattern: str, path: str) -> bool:
        if pattern not in compiled:
            compiled[pattern] = re2.compile(glob_to_regex(pattern))
        return compiled[pattern].fullmatch(path) is not None

    return matches


# name → (pattern, path of about `size` bytes): each built so that greedy matching works hardest.
GLOB_CASES: dict[str, tuple[str, Callable[[int], str]]] = {
    "stars in a segment: /*a*a…*b (20 stars) vs /aaa…": ("/" + "*a" * 20 + "*b", lambda size: "/" + "a" * size),
    "long literal after *: /*aaa…b (200) vs /aaa…": ("/*" + "a" * 200 + "b", lambda size: "/" + "a" * size),
    "** segments: /**/a/**/a…/b (20) vs /a/a/a…": ("/**" + "/a/**" * 20 + "/b", lambda size: "/a" * (size // 2)),
    "** then starred segment: /**/*a*b vs /aaa…/aaa…": ("/**/*a*b", lambda size: ("/" + "a" * 30) * (size // 31)),
}

# Request-targets that make normalization work hardest: dot segments, escapes, merged slashes.
PATH_CASES: dict[str, Callable[[int], str]] = {
    "normalize: /a/../a/../…": lambda size: "/a/.." * (size // 5),
    "normalize: /%2e%2e/%2E/…": lambda size: "/%2e%2e/%2E" * (size // 11),
    "normalize: ///… then ?query": lambda size: "/" * (size // 2) + "?" + "q" * (size // 2),
    "normalize: /%41%42… (escapes)": lambda size: "/" + "%41" * (size // 3),
}


def _per_call(run: Callable[[], object]) -> float:
    """Seconds per call, the best of a few rounds (the machine is shared)."""
    best = float("inf")
    for _ in range(3):
        calls, start = 0, time.perf_counter()
        while calls == 0 or time.perf_counter() - start < 0.05:
            run()
            calls += 1
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def _row(label: str, run_at: Callable[[int], Callable[[], object]]) -> None:
    times = [_per_call(run_at(size)) for size in SIZES]
    cells = []
    for i, seconds in enumerate(times):
        ratio = f" (x{seconds / times[i - 1]:.1f})" if i else ""
        cells.append(f"{seconds * 1000:9.3f} ms{ratio:8}")
    print(f"{label:62} " + " ".join(cells))


def main() -> None:
    implementations = {"python": glob_matches, "lua": _lua_glob(), "re2": _re2_glob()}
    print(f"{'case / implementation':62} " + " ".join(f"{size:>9} B{'':10}" for size in SIZES))
    for name, (pattern, path_of) in GLOB_CASES.items():
        print(name)
        for implementation, matches in implementations.items():
            if matches is not None:
                _row(f"  {implementation}", lambda size, m=matches, p=pattern, f=path_of: partial(m, p, f(size)))
    for name, target_of in PATH_CASES.items():
        _row(name, lambda size, f=target_of: partial(normalize_target, f(size)))


if __name__ == "__main__":
    main()
