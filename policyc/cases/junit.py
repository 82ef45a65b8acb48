"""Policy unit-test results → a JUnit XML report, the format CI systems show as test results.

`junit_xml(suites)` takes (case file path, its `CaseResult`s) pairs and returns the XML text:
one <testsuite> per case file, one <testcase> per case, a <failure> listing what differed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable

from .casefile import CaseResult


def junit_xml(suites: Iterable[tuple[str, list[CaseResult]]]) -> str:
    root = ET.Element("testsuites", name="policyc test")
    total = failed = 0
    for path, results in suites:
        failures = sum(not r.passed for r in results)
        suite = ET.SubElement(root, "testsuite", name=path, tests=str(len(results)), failures=str(failures),
                              errors="0", skipped="0")
        for result in results:
            case = ET.SubElement(suite, "testcase", name=result.case.name, classname=path, file=path)
            line = result.case.where.rpartition(":")[2]
            if line.isdigit():
                case.set("line", line)
            if not result.passed:
                failure = ET.SubElement(case, "failure", message="; ".join(result.failures), type="decision")
                failure.text = f"{result.case.where}\n" + "\n".join(result.failures)
        total += len(results)
        failed += failures
    root.set("tests", str(total))
    root.set("failures", str(failed))
    root.set("errors", "0")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
